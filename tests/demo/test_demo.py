"""The web demo's work without a browser: its images are the pipeline's for the seed (image i
from seed + i, as the command line draws them), captioned with their settings; bad input is
a one-line message naming what was wrong."""

from __future__ import annotations

import pytest
import torch
from conftest import gen
from PIL import Image

pytest.importorskip("gradio", reason="the web demo needs the demo extra (gradio)")

from t2i.demo import Demo, build_app, main  # noqa: E402
from t2i.generate import main as generate  # noqa: E402


@pytest.fixture(scope="module")
def demo(saved_unclip_pipeline):
    return Demo(saved_unclip_pipeline, device="cpu")


def pixels(image: Image.Image, k: int) -> bytes:
    """The image as drawn: the demo's enlarged one shrunk back (nearest-neighbour)."""
    w, h = image.size
    return image.resize((w // k, h // k), Image.NEAREST).convert("RGB").tobytes()


def test_the_demo_shows_what_the_pipeline_draws_for_the_seed(demo, saved_unclip_pipeline):
    shown = demo.generate("a red circle", "", "dalle", seed=5, num_images=3, settings={})
    assert len(shown) == 3 and shown[0][0].size == (256, 256)  # 16 px, enlarged 16x
    pipe = demo.pipes["dalle"]
    want = pipe("a red circle", num_images_per_prompt=3, generator=[gen(5), gen(6), gen(7)])
    for (image, caption), drawn in zip(shown, want.images, strict=True):
        assert pixels(image, 16) == drawn.convert("RGB").tobytes()
        assert caption.startswith("seed 5 image") and "guidance_scale=" in caption
    # and another seed, other images
    other = demo.generate("a red circle", "", "dalle", seed=6, num_images=1)
    assert pixels(other[0][0], 16) == pixels(shown[1][0], 16)  # image 0 of seed 6 = 1 of 5
    assert pixels(other[0][0], 16) != pixels(shown[0][0], 16)


def test_the_demo_and_the_command_line_agree_image_for_image(
    demo, saved_unclip_pipeline, tmp_path, capsys
):
    shown = demo.generate("a blue square", "a red circle", "unclip", 2, 2, {"rerank": None})
    argv = ["a blue square", "--negative-prompt", "a red circle", "--route", "unclip", "-n", "2"]
    argv += ["--seed", "2", "--model", str(saved_unclip_pipeline), "--out", str(tmp_path)]
    assert generate([*argv, "--device", "cpu"]) == 0
    written = capsys.readouterr().out.split()
    for (image, _), path in zip(shown, written, strict=True):
        assert pixels(image, 16) == Image.open(path).convert("RGB").tobytes()


def test_settings_from_the_page_are_used_and_bad_ones_named(demo):
    greedy = demo.generate("a red circle", "", "dalle", 0, 2, {"temperature": 0.0})
    drawn = demo.generate("a red circle", "", "dalle", 0, 2, {"temperature": 1.0})
    assert "temperature=0.0" in greedy[0][1] and "temperature=1.0" in drawn[0][1]
    assert pixels(greedy[0][0], 16) != pixels(drawn[0][0], 16)
    assert pixels(greedy[0][0], 16) == pixels(greedy[1][0], 16)  # greedy: one image, twice
    with pytest.raises(ValueError, match="the prompt is empty"):
        demo.generate("  ", "", "dalle")
    with pytest.raises(ValueError, match="temperature=-1.0: must be a finite number >= 0"):
        demo.generate("a red circle", "", "dalle", 0, 2, {"temperature": -1.0})
    with pytest.raises(ValueError, match="route 'maskgit'"):
        demo.generate("a red circle", "", "maskgit")
    with pytest.raises(ValueError, match="seed=-1: must be a whole number >= 0"):
        demo.generate("a red circle", "", "dalle", -1)  # the command line could not redraw it
    with pytest.raises(ValueError, match="num_images=17: must be 1 to 16"):
        demo.generate("a red circle", "", "dalle", 0, 17)  # past the page's slider


def test_variations_of_a_picked_image_come_from_the_unclip_route(demo):
    source = demo.generate("a red circle", "", "dalle", 0, 1)[0][0]
    varied = demo.variations(source, seed=3, num_images=2)
    small = source.resize((16, 16), Image.NEAREST)
    want = demo.pipes["unclip"].variations(
        small, num_images=2, generator=torch.Generator().manual_seed(3)
    )
    for (image, _), drawn in zip(varied, want.images, strict=True):
        assert pixels(image, 16) == drawn.convert("RGB").tobytes()
    with pytest.raises(ValueError, match="pick an image"):
        demo.variations(None)


def test_the_page_builds_with_every_route_and_the_recorded_settings(demo):
    app = build_app(demo)
    labels = {getattr(block, "label", None) for block in app.blocks.values()}
    assert {"prompt", "negative prompt", "route", "seed", "images", "guidance scale"} <= labels
    sliders = [b for b in app.blocks.values() if getattr(b, "label", "") == "temperature"]
    assert sliders and sliders[0].value == demo.pipes["dalle"].sampling_defaults["temperature"]


def test_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none: no such directory, nor a shipped pipeline" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "shipped, shown", [(["default", "emoji"], "emoji"), (["default"], "default")]
)
def test_without_model_the_demo_shows_the_emoji_pipeline_first(shipped, shown, monkeypatch):
    import t2i.demo as demo_module

    served = []

    def refuse(model, device):  # stops main before it serves the page
        served.append(model)
        raise ValueError("stop")

    monkeypatch.setattr(demo_module, "shipped", lambda: shipped)
    monkeypatch.setattr(demo_module, "Demo", refuse)
    assert main([]) == 2 and served == [shown]
