"""`python -m t2i.generate`: the files it promises, their metadata, and clean failures."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from t2i.generate import main


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
    grid = Image.open(printed[2])
    assert grid.size == (2 * 16 + 1, 16)
    assert main(argv) == 0  # the same seed writes the same pixels
    assert Image.open(printed[0]).tobytes() == first.tobytes()


def test_priming_from_an_init_image(saved_pipeline, tmp_path, capsys):
    init = tmp_path / "init.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(init)
    argv = [
        "a red circle",
        "--model",
        str(saved_pipeline),
        "-n",
        "1",
        "--out",
        str(tmp_path / "o"),
        "--init-image",
        str(init),
        "--prime-rows",
        "2",
    ]
    assert main(argv) == 0
    path = capsys.readouterr().out.split()[0]
    assert json.loads(Image.open(path).text["t2i"])["prime_rows"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["   "], "prompt 1 is empty"),
        (["a red circle", "--model", "no/such/dir"], "--model no/such/dir: no such directory"),
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


def test_an_unknown_flag_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["a red circle", "--strength", "9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --strength 9" in err and len(err.splitlines()) == 1


def test_the_unclip_route_from_the_command_line(tmp_path, capsys):
    from conftest import tiny_pipeline

    model = tmp_path / "pipe"
    tiny_pipeline(unclip=True).save_pretrained(model)
    argv = ["a red circle", "--model", str(model), "-n", "2", "--out", str(tmp_path / "o")]
    unclip = ["--route", "unclip", "--steps", "4", "--prior-guidance-scale", "2"]
    assert main([*argv, *unclip, "--prior-candidates", "3"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2
    settings = json.loads(Image.open(printed[0]).text["t2i"])
    assert settings["route"] == "unclip" and settings["num_inference_steps"] == 4
    assert settings["prior_guidance_scale"] == 2 and settings["prior_candidates"] == 3
    assert settings["guidance_scale"] == 3.0  # the decoder's (the library's: none recorded)
    assert main([*argv, "--route", "unclip", "--steps", "4"]) == 0  # the pipeline's recorded one
    settings = json.loads(Image.open(capsys.readouterr().out.split()[0]).text["t2i"])
    assert settings["prior_guidance_scale"] == 1.0 and settings["prior_candidates"] == 1


def test_the_unclip_route_of_a_dalle_only_pipeline_is_a_one_line_error(
    saved_pipeline, tmp_path, capsys
):
    argv = ["a red circle", "--model", str(saved_pipeline), "--route", "unclip"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a pipeline with a diffusion_prior" in err
