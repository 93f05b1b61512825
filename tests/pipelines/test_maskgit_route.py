"""The masked route: its pipeline in a bundle, saved and loaded, its recorded settings, its
steps, inpainting, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import gen, tiny_pipeline
from PIL import Image

from t2i import load_pipeline
from t2i.pipelines import MaskGITPipeline, MaskGITSampling, TextToImagePipeline


@pytest.fixture(scope="module")
def bundle():
    return tiny_pipeline(maskgit=True)


@pytest.fixture(scope="module")
def pipe(bundle):
    return bundle.route("maskgit")


@pytest.fixture(scope="module")
def saved(bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("maskgit_pipeline")
    bundle.sampling_defaults.update(maskgit_num_inference_steps=5, maskgit_guidance_scale=2.5)
    bundle.save_pretrained(path)
    return path


def test_the_bundle_has_the_route_only_with_a_masked_prior(bundle):
    assert "maskgit" in bundle.routes and isinstance(bundle.route("maskgit"), MaskGITPipeline)
    plain = tiny_pipeline()
    assert "maskgit" not in plain.routes
    with pytest.raises(ValueError, match="route='maskgit' needs a pipeline with a masked_prior"):
        plain.route("maskgit")


def test_a_dalle_prior_in_the_masked_slot_is_refused_by_name(bundle):
    with pytest.raises(ValueError, match="masked_prior: a DALLEPrior; the masked route needs"):
        MaskGITPipeline(bundle.clip, bundle.image_tokenizer, bundle.prior)


def test_a_saved_bundle_loads_the_route_with_its_recorded_settings(saved, pipe):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["masked_prior"] == ["t2i.models.maskgit", "MaskGITPrior"]
    assert index["_t2i_sampling"]["maskgit_num_inference_steps"] == 5
    loaded = load_pipeline(saved, device="cpu", route="maskgit")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, MaskGITPipeline)
    out = loaded("a red circle", 2, generator=gen(3), output_type="pt")
    assert out.settings.num_inference_steps == 5 and out.settings.guidance_scale == 2.5
    same = pipe(
        "a red circle",
        2,
        generator=gen(3),
        output_type="pt",
        num_inference_steps=5,
        guidance_scale=2.5,
    )
    assert torch.equal(out.images, same.images)  # the saved weights draw what they drew
    # a DALL-E call on the same bundle is untouched by the masked route's settings
    assert (
        TextToImagePipeline.from_pretrained(saved)
        .route("dalle")
        .sampling_defaults["guidance_scale"]
        == pipe.sampling_defaults["guidance_scale"]
    )


def test_the_steps_are_the_parallel_passes_and_the_callback_sees_each(pipe):
    seen = []

    def callback(p, i, t, state):
        seen.append((i, int((state["codes"] == 32).sum())))
        return state

    out = pipe(
        "a red circle",
        2,
        generator=gen(0),
        num_inference_steps=4,
        output_type="np",
        callback_on_step_end=callback,
    )
    assert out.images.shape == (2, 16, 16, 3)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert seen[-1][1] == 0 and seen[0][1] > 0  # the last step leaves no code masked


def test_settings_out_of_range_are_named(pipe):
    with pytest.raises(ValueError, match="num_inference_steps=0: must be a whole number >= 1"):
        pipe("a red circle", num_inference_steps=0)
    with pytest.raises(ValueError, match="choice_temperature=-1"):
        pipe("a red circle", choice_temperature=-1)
    assert MaskGITSampling.library_defaults()["maskgit_num_inference_steps"] == 12


def test_inpainting_keeps_the_unmasked_codes_and_redraws_the_masked(pipe):
    source = pipe("a red circle", 1, generator=gen(1), output_type="pil").images[0]
    codes = pipe.masked_prior.flatten(
        pipe.image_tokenizer.encode(
            torch.from_numpy(np.asarray(source, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        )
    )  # (1, 16): the 4 x 4 grid the route starts from
    mask = np.zeros((16, 16), np.float32)
    mask[8:, :] = 1.0  # redraw the bottom half: code rows 2 and 3
    finals = []

    def last(p, i, t, state):
        finals.append(state["codes"].clone())
        return state

    pipe(
        "a blue square",
        3,
        generator=gen(2),
        image=source,
        mask_image=Image.fromarray((mask * 255).astype(np.uint8)),
        callback_on_step_end=last,
    )
    final = finals[-1]  # (3, 16)
    assert torch.equal(final[:, :8], codes.expand(3, -1)[:, :8])
    assert (final[:, 8:] != codes[:, 8:]).any()
    # a tensor mask means the same; a code is redrawn when any of its pixels is
    one_pixel = torch.zeros(16, 16)
    one_pixel[0, 0] = 1.0
    init, keep = pipe.inpaint_codes(source, one_pixel, 2)
    assert keep.shape == (2, 16) and (~keep).sum(1).tolist() == [1, 1] and not keep[0, 0]


def test_inpainting_arguments_are_named(pipe):
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="needs both image and mask_image; image came alone"):
        pipe("a red circle", image=image)
    with pytest.raises(ValueError, match="needs both image and mask_image; mask_image came alone"):
        pipe("a red circle", mask_image=np.ones((16, 16)))
    with pytest.raises(ValueError, match="marks nothing to redraw"):
        pipe("a red circle", image=image, mask_image=np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"mask_image of shape \(3, 16, 16\)"):
        pipe("a red circle", image=image, mask_image=np.ones((3, 16, 16)))


def test_the_command_line_draws_the_route_and_draws_a_png_again(saved, tmp_path, capsys):
    from t2i.generate import main

    argv = ["a red circle", "--model", str(saved), "--route", "maskgit", "--steps", "3"]
    assert (
        main([*argv, "-n", "2", "--seed", "4", "--device", "cpu", "--out", str(tmp_path / "a")])
        == 0
    )
    written = sorted((tmp_path / "a").glob("*.png"))
    assert len(written) == 2
    record = json.loads(Image.open(written[1]).text["t2i"])
    assert record["route"] == "maskgit" and record["num_inference_steps"] == 3
    assert main(["--from-png", str(written[1]), "--out", str(tmp_path / "b")]) == 0
    again = sorted((tmp_path / "b").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(written[1])))
    capsys.readouterr()


def test_the_command_line_inpaints_with_a_mask_and_names_a_missing_one(saved, tmp_path, capsys):
    from t2i.generate import main

    init, mask = tmp_path / "in.png", tmp_path / "m.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(init)
    m = np.zeros((16, 16), np.uint8)
    m[:, 8:] = 255
    Image.fromarray(m).save(mask)
    base = ["a red circle", "--model", str(saved), "--route", "maskgit", "--device", "cpu"]
    out = ["--out", str(tmp_path / "o")]
    assert main([*base, "--init-image", str(init), *out]) == 2
    assert "give --mask-image" in capsys.readouterr().err
    assert main([*base, "--mask-image", str(mask), *out]) == 2
    assert "--mask-image needs --init-image" in capsys.readouterr().err
    dalle = ["a red circle", "--model", str(saved), "--init-image", str(init)]
    assert main([*dalle, "--mask-image", str(mask), *out]) == 2
    assert "inpainting is on --route maskgit, not dalle" in capsys.readouterr().err
    args = [*base, "-n", "1", "--init-image", str(init), "--mask-image", str(mask), *out]
    assert main(args) == 0
    record = json.loads(Image.open(next((tmp_path / "o").glob("*.png"))).text["t2i"])
    assert record["mask_image"] == str(mask) and record["mask_image_hash"]
