"""`python -m t2i.generate`: an image drawn again from its PNG, byte for byte; nothing written
before is replaced; prompts from a file; --out checked before any slow work; square grids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i.generate import main


def run(argv, capsys) -> tuple[int, list[str], str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out.split(), captured.err.strip()


@pytest.mark.parametrize("route", ["dalle", "unclip"])
def test_from_png_draws_the_same_image_byte_for_byte(
    route, saved_unclip_pipeline, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["a red circle", "a blue square", "--model", str(saved_unclip_pipeline)]
    argv += ["-n", "3", "--seed", "11", "--route", route, "--device", "cpu", "--out", str(out)]
    argv += ["--negative-prompt", "a green triangle", "--top-k", "12"]
    if route == "unclip":
        argv += ["--steps", "3", "--prior-guidance-scale", "2"]
    code, written, _ = run(argv, capsys)
    assert code == 0 and len(written) == 6
    target = written[5]  # the second prompt's image 2
    record = json.loads(Image.open(target).text["t2i"])
    assert record["index"] == 2 and record["seed"] == 11 and record["route"] == route
    assert record["negative_prompt"] == "a green triangle" and record["top_k"] == 12
    assert len(record["model_hash"]) == 16 and record["t2i_version"]
    code, again, _ = run(["--from-png", target, "--out", str(out)], capsys)
    assert code == 0 and len(again) == 1 and again[0] != target
    with open(target, "rb") as a, open(again[0], "rb") as b:
        assert a.read() == b.read()  # the pixels and every word of the metadata
    # another index of the same call is another image
    assert np.asarray(Image.open(written[4])).tobytes() != np.asarray(Image.open(target)).tobytes()


def test_from_png_refuses_other_weights_a_grid_and_extra_settings(saved_pipeline, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(saved_pipeline, model)
    out = tmp_path / "out"
    argv = ["a red circle", "--model", str(model), "-n", "1", "--grid", "--out", str(out)]
    code, written, _ = run([*argv, "--device", "cpu"], capsys)
    assert code == 0
    image, grid = written
    code, _, err = run(["--from-png", grid], capsys)
    assert code == 2 and "lacks index" in err and len(err.splitlines()) == 1
    code, _, err = run(["--from-png", image, "--guidance-scale", "4"], capsys)
    assert code == 2 and "--guidance-scale cannot be given with it" in err
    code, _, err = run(["--from-png", image, "a blue square"], capsys)
    assert code == 2 and "PROMPT cannot be given with it" in err
    code, _, err = run(["--from-png", str(tmp_path / "none.png")], capsys)
    assert code == 2 and "no such file" in err
    # the model's weights changed since: it would draw another image
    weights = next((model / "prior").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    code, _, err = run(["--from-png", image, "--out", str(out)], capsys)
    assert code == 2 and "drawn by a model with weights" in err and "Traceback" not in err
    assert len(list(out.iterdir())) == 2  # nothing drawn


def test_a_second_call_never_replaces_the_first_calls_images(saved_pipeline, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["a red circle", "--model", str(saved_pipeline), "-n", "2", "--device", "cpu"]
    code, first, _ = run([*base, "--out", str(out)], capsys)
    before = {p: open(p, "rb").read() for p in first}
    code, second, _ = run([*base, "--out", str(out), "--temperature", "0.3"], capsys)
    assert code == 0 and not set(first) & set(second)
    assert all(open(p, "rb").read() == data for p, data in before.items())
    assert len(list(out.iterdir())) == 4
    settings = [json.loads(Image.open(p).text["t2i"])["temperature"] for p in second]
    assert settings == [0.3, 0.3]


def test_prompts_come_from_a_file_one_a_line(saved_pipeline, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeffa red circle\n\n  a blue square  \n", encoding="utf-8")  # a BOM
    argv = ["--prompts-file", str(prompts), "--model", str(saved_pipeline), "-n", "1"]
    code, written, _ = run([*argv, "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert code == 0
    assert [Image.open(p).text["prompt"] for p in written] == ["a red circle", "a blue square"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    code, _, err = run(["--prompts-file", str(empty)], capsys)
    assert code == 2 and f"--prompts-file {empty}: no prompt in it" in err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a café".encode("latin-1"))
    code, _, err = run(["--prompts-file", str(latin)], capsys)
    assert (
        code == 2
        and f"--prompts-file {latin}: not UTF-8 text (byte 0xe9 at offset 5, line 1)" in err
    )


def test_a_square_grid_and_upscaled_images(saved_pipeline, tmp_path, capsys):
    argv = ["a red circle", "--model", str(saved_pipeline), "-n", "5", "--grid", "--device"]
    code, written, _ = run([*argv, "cpu", "--out", str(tmp_path / "g")], capsys)
    grid = Image.open(written[-1])
    assert grid.size == (3 * 129 - 1, 2 * 129 - 1)  # 5 images: 3 columns, 2 rows of 128 px
    code, big, _ = run([*argv, "cpu", "--upscale", "3", "--out", str(tmp_path / "u")], capsys)
    small, large = Image.open(written[0]).convert("RGB"), Image.open(big[0]).convert("RGB")
    assert large.size == (48, 48)
    assert large.resize((16, 16), Image.NEAREST).tobytes() == small.tobytes()
    assert Image.open(big[-1]).size == (3 * 49 - 1, 2 * 49 - 1)


# run apart: main(argv) then whether torch was imported
REFUSE = """import sys
from t2i.generate import main
print(main(sys.argv[1:]), "torch" in sys.modules)
"""


@pytest.mark.parametrize("case", ["file", "under_a_file", "unwritable", "uncreatable"])
def test_a_bad_out_is_refused_before_torch_is_imported(case, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    out, says = taken, "is a file, not a folder"
    if case == "under_a_file":
        out = taken / "out"
    elif case == "unwritable":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("running as root, for whom every folder is writable")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out, says = locked / "out", "cannot be written"
    elif case == "uncreatable":  # a folder no one can make, root included
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here, where mkdir fails for every user")
        out, says = Path("/proc/t2i-out"), "cannot be created"
    argv = [sys.executable, "-c", REFUSE, "a red circle", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"]
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert taken.read_text() == "mine"


def test_a_recorded_rerank_draws_a_generator_per_candidate(saved_pipeline, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(saved_pipeline, model)
    index = json.loads((model / "model_index.json").read_text())
    index["_t2i_sampling"]["rerank"] = 4
    (model / "model_index.json").write_text(json.dumps(index))
    argv = ["a red circle", "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "o")]
    code, written, err = run([*argv, "-n", "1"], capsys)
    assert code == 0, err
    record = json.loads(Image.open(written[0]).text["t2i"])
    assert record["rerank"] == 4  # the best of 4 candidates, seeds 0 to 3
    code, again, _ = run(["--from-png", written[0], "--out", str(tmp_path / "o")], capsys)
    assert open(again[0], "rb").read() == open(written[0], "rb").read()
    code, more, _ = run([*argv, "-n", "6"], capsys)  # more images than it records
    assert code == 0 and json.loads(Image.open(more[0]).text["t2i"])["rerank"] == 6


def test_prompts_go_in_batches_written_as_they_end_and_an_interrupt_keeps_them(
    saved_pipeline, tmp_path, capsys, monkeypatch
):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a red circle {i}\n" for i in range(5)))
    argv = [
        "--prompts-file",
        str(prompts),
        "--model",
        str(saved_pipeline),
        "-n",
        "2",
        "--device",
        "cpu",
    ]
    code, whole, _ = run([*argv, "--batch-size", "5", "--out", str(tmp_path / "one")], capsys)
    code2, batched, _ = run([*argv, "--batch-size", "2", "--out", str(tmp_path / "three")], capsys)
    assert code == code2 == 0 and [Path(p).name for p in whole] == [Path(p).name for p in batched]
    for a, b in zip(whole, batched, strict=True):  # the same images, batch by batch
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))

    from t2i.pipelines import DALLEPipeline

    calls = []
    original = DALLEPipeline.__call__

    def stop_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DALLEPipeline, "__call__", stop_second)
    code, written, err = run([*argv, "--batch-size", "2", "--out", str(tmp_path / "cut")], capsys)
    assert code == 130 and len(written) == 4  # the first batch: 2 prompts x 2 images
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == sorted(
        Path(p).name for p in written
    )
    assert "interrupted: 4 files written to" in err and "5 prompts asked" in err


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("seed", "abc", "seed='abc'; it must be a whole number >= 0"),
        ("index", -1, "index=-1; it must be a whole number >= 0"),
        ("route", "dalle3", "route='dalle3'; it must be dalle, unclip, ldm or maskgit"),
        ("dtype", "float8", "dtype='float8'; it must be one of float32, bfloat16, float16"),
        ("upscale", 0, "upscale=0; it must be null or a whole number in [1, 64]"),
        ("temperature", -2, "temperature=-2"),
    ],
)
def test_edited_png_metadata_is_named_by_file_and_field(
    field, value, named, saved_pipeline, tmp_path, capsys
):
    from PIL import PngImagePlugin

    argv = ["a red circle", "--model", str(saved_pipeline), "-n", "1", "--device", "cpu"]
    _, written, _ = run([*argv, "--out", str(tmp_path / "o")], capsys)
    with Image.open(written[0]) as image:
        record = json.loads(image.text["t2i"])
        pixels = image.copy()
    record[field] = value
    info = PngImagePlugin.PngInfo()
    info.add_text("t2i", json.dumps(record))
    edited = tmp_path / "edited.png"
    pixels.save(edited, pnginfo=info)
    code, _, err = run(["--from-png", str(edited), "--out", str(tmp_path / "again")], capsys)
    assert code == 2 and f"--from-png {edited}: its t2i metadata has {named}" in err
    assert "Traceback" not in err and not (tmp_path / "again").exists()
