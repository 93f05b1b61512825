"""`python -m t2i.generate`: the files it promises, their metadata, and clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import gen
from PIL import Image

from t2i import load_pipeline
from t2i.generate import main
from t2i.models import DALLEPrior
from t2i.pipelines import UnCLIPSampling
from t2i.pipelines.common import image_tensor, to_output


def pixels(path) -> np.ndarray:
    """A written PNG's pixels, (H, W, 3) uint8."""
    return np.asarray(Image.open(path).convert("RGB"))


def settings_of(metadata: dict) -> dict:
    """The unCLIP sampling settings in a PNG's "t2i" metadata, as call arguments."""
    return {k: metadata[k] for k in UnCLIPSampling().as_dict()}


def test_writes_the_images_and_grids_it_prints_with_prompt_and_settings(
    saved_pipeline, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [
        "a red circle",
        "a blue square above a green circle",
        "--model",
        str(saved_pipeline),
        "-n",
        "2",
        "--seed",
        "3",
        "--out",
        str(out),
        "--grid",
        "--top-k",
        "8",
        "--guidance-scale",
        "2",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(p) for p in out.iterdir())
    assert len(printed) == 2 * (2 + 1)  # two images and a grid per prompt
    first = Image.open(printed[0])
    assert first.size == (16, 16) and first.text["prompt"] == "a red circle"
    settings = json.loads(first.text["t2i"])
    assert settings["seed"] == 3 and settings["top_k"] == 8 and settings["guidance_scale"] == 2
    grid = Image.open(printed[2])  # a row of two, each enlarged 8x (16 -> 128 px)
    assert grid.size == (2 * 128 + 1, 128)
    assert grid.crop((0, 0, 128, 128)).resize((16, 16), Image.NEAREST).tobytes() == (
        first.convert("RGB").tobytes()
    )
    assert main(argv) == 0  # the same seed writes the same pixels, beside the first files
    again = capsys.readouterr().out.split()
    assert again[0].endswith("_i0-2.png") and Image.open(again[0]).tobytes() == first.tobytes()


def test_priming_from_an_init_image_keeps_its_code_rows_in_the_written_pixels(
    saved_pipeline, tmp_path, capsys
):
    init = tmp_path / "init.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(init)
    argv = ["a red circle", "--model", str(saved_pipeline), "-n", "2", "--seed", "4"]
    argv += ["--device", "cpu"]
    drawn = []
    sample = DALLEPrior.sample

    def spy(self, *args, **kw):
        drawn.append(sample(self, *args, **kw))
        return drawn[-1]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DALLEPrior, "sample", spy)
        primed_argv = [*argv, "--out", str(tmp_path / "p"), "--init-image", str(init)]
        assert main([*primed_argv, "--prime-rows", "2"]) == 0
        primed = capsys.readouterr().out.split()
        assert main([*argv, "--out", str(tmp_path / "u")]) == 0
        unprimed = capsys.readouterr().out.split()
    assert json.loads(Image.open(primed[0]).text["t2i"])["prime_rows"] == 2
    assert json.loads(Image.open(unprimed[0]).text["t2i"])["prime_rows"] == 0
    # the codes drawn for the written images start with the init image's top two code rows
    pipe = load_pipeline(saved_pipeline, device="cpu")
    init_codes = pipe.image_tokenizer.encode(image_tensor(Image.open(init), 16)).flatten(1)
    codes = drawn[0]
    assert codes.shape == (2, 16) and torch.equal(codes[:, :8], init_codes[:, :8].expand(2, -1))
    assert not torch.equal(drawn[1][:, :8], codes[:, :8])  # unprimed, they are drawn
    # the written PNGs are those codes decoded, and differ from the unprimed run's
    with torch.no_grad():
        decoded = to_output(pipe.decode_codes(pipe.prior, codes), "np")
    for i, path in enumerate(primed):
        assert (pixels(path) == (decoded[i] * 255).round()).all()
    assert all((pixels(a) != pixels(b)).any() for a, b in zip(primed, unprimed, strict=True))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["   "], "prompt 1 is empty"),
        (
            ["a red circle", "--model", "no/such/dir"],
            "--model no/such/dir: no such directory, nor a shipped pipeline (default",
        ),
        (
            ["a red circle", "--model", "{model}", "--prime-rows", "9", "--init-image", "{image}"],
            "num_prime_rows=9",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_with_a_nonzero_exit(
    argv, message, saved_pipeline, tmp_path, capsys
):
    image = tmp_path / "i.png"
    Image.new("RGB", (16, 16)).save(image)
    argv = [a.format(model=saved_pipeline, image=image) for a in argv]
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_shipped_pipeline_is_named_by_its_name(tmp_path, capsys):
    by_name, by_default = tmp_path / "named", tmp_path / "plain"
    assert main(["a red circle", "-n", "1", "--model", "default", "--out", str(by_name)]) == 0
    assert main(["a red circle", "-n", "1", "--out", str(by_default)]) == 0
    named, plain = (sorted(p.glob("*.png")) for p in (by_name, by_default))
    assert len(named) == 1 and pixels(named[0]).tolist() == pixels(plain[0]).tolist()


# run apart: main(argv) then whether torch was imported (SystemExit is argparse's refusal)
REFUSE = """import sys
from t2i.generate import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--guidance-scale", "nan"], "argument --guidance-scale: nan: must be a finite number"),
        (["--guidance-scale", "inf"], "argument --guidance-scale: inf: must be a finite number"),
        (["--temperature", "nan"], "argument --temperature: nan: must be a finite number"),
        (["--top-p", "2"], "argument --top-p: 2: must be a number in (0, 1]"),
        (["--top-k", "-1"], "argument --top-k: -1: must be a whole number >= 1"),
        (["--route", "unclip", "--steps", "0"], "argument --steps: 0: must be a whole number"),
        (["--prior-candidates", "0"], "argument --prior-candidates: 0: must be a whole number"),
        (["--strength", "1.5"], "argument --strength: 1.5: must be a number in [0, 1]"),
        (["-n", "0"], "argument -n/--num-images: 0: must be a whole number >= 1"),
        (["--rerank", "many"], "argument --rerank: 'many' is not a whole number"),
    ],
)
def test_a_bad_flag_value_is_named_before_torch_is_imported(flags, says):
    argv = [sys.executable, "-c", REFUSE, "a red circle", *flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"]  # refused, and the heavy imports never ran
    err = done.stderr.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_unknown_flag_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["a red circle", "--strenght", "9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --strenght 9" in err and len(err.splitlines()) == 1


def test_the_unclip_route_from_the_command_line(saved_unclip_pipeline, tmp_path, capsys):
    model = saved_unclip_pipeline
    argv = ["a red circle", "--model", str(model), "-n", "2", "--device", "cpu"]
    unclip = ["--route", "unclip", "--steps", "4", "--prior-guidance-scale", "2"]
    assert main([*argv, *unclip, "--prior-candidates", "3", "--out", str(tmp_path / "u")]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2
    settings = json.loads(Image.open(printed[0]).text["t2i"])
    assert settings["route"] == "unclip" and settings["num_inference_steps"] == 4
    assert settings["prior_guidance_scale"] == 2 and settings["prior_candidates"] == 3
    # the decoder's (the library's: none recorded); the DALL-E prior's names are not written
    assert settings["decoder_guidance_scale"] == 3.0 and "guidance_scale" not in settings
    # the pixels are what the unCLIP route draws with that seed and those settings
    pipe = load_pipeline(model, device="cpu", route="unclip")
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_images_per_prompt=2, output_type="np")
    given = dict(num_inference_steps=4, prior_guidance_scale=2, prior_candidates=3)
    want = pipe("a red circle", generator=[gen(0), gen(1)], **given, **kw)
    for path, image in zip(printed, want.images, strict=True):
        assert (pixels(path) == (image * 255).round()).all()
    # and not what the DALL-E route draws with the same seed
    assert main([*argv, "--out", str(tmp_path / "d")]) == 0
    dalle = capsys.readouterr().out.split()
    assert json.loads(Image.open(dalle[0]).text["t2i"])["route"] == "dalle"
    assert all((pixels(a) != pixels(b)).any() for a, b in zip(printed, dalle, strict=True))
    # --guidance-scale / --temperature are the decoder's on this route
    decoder = ["--guidance-scale", "1.5", "--temperature", "0.5"]
    unclip = ["--route", "unclip", "--steps", "4", *decoder, "--out", str(tmp_path / "g")]
    assert main([*argv, *unclip]) == 0
    printed = capsys.readouterr().out.split()
    settings = json.loads(Image.open(printed[0]).text["t2i"])
    assert settings["decoder_guidance_scale"] == 1.5 and settings["decoder_temperature"] == 0.5
    assert settings["prior_guidance_scale"] == 1.0 and settings["prior_candidates"] == 1
    seeds = [gen(0), gen(1)]  # image i from seed + i
    decoded = pipe("a red circle", generator=seeds, **kw, **settings_of(settings)).images
    for path, image in zip(printed, decoded, strict=True):
        assert (pixels(path) == (image * 255).round()).all()


def test_the_unclip_route_of_a_dalle_only_pipeline_is_a_one_line_error(
    saved_pipeline, tmp_path, capsys
):
    argv = ["a red circle", "--model", str(saved_pipeline), "--route", "unclip"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--route unclip: " in err and "has the dalle route only" in err
