"""The shapes world follows its spec: seeded, captioned, inside the canvas, relations held."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from t2i.data import shapes
from t2i.data.shapes import (
    CELLS,
    PALETTE,
    RELATION_MARGIN,
    SIZES,
    ShapesDataset,
    attributes,
    caption_for,
    cell_center,
    make_sample,
    relation_holds,
    render_spec,
)


def test_same_seed_same_sample_other_seed_other_sample():
    a, b = make_sample(5, seed=3), make_sample(5, seed=3)
    assert a["caption"] == b["caption"] and a["spec"] == b["spec"]
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    others = [make_sample(5, seed=s) for s in range(4, 12)]
    assert any(o["caption"] != a["caption"] for o in others)
    assert any(not np.array_equal(np.asarray(o["image"]), np.asarray(a["image"])) for o in others)


@pytest.mark.parametrize("size", [32, 64])
def test_pixels_are_black_or_the_objects_colors_and_objects_fit(size):
    for i in range(100):
        s = make_sample(i, seed=1, size=size)
        pixels = np.asarray(s["image"]).reshape(-1, 3)
        colors = {tuple(p) for p in np.unique(pixels, axis=0)}
        expected = {(0, 0, 0)} | {PALETTE[o.color] for o in s["layout"]}
        assert colors == expected  # every object visible, nothing else drawn
        for o in s["layout"]:
            left, top, right, bottom = o.box()
            assert 0 <= left and right <= size and 0 <= top and bottom <= size
            assert o.side == pytest.approx(SIZES[o.size] * size)


def test_centers_stay_within_jitter_of_their_cell_unless_clamped():
    for i in range(200):
        for o in make_sample(i, seed=2, num_objects=1, size=64)["layout"]:
            x, y = cell_center(o.cell, 64)
            clamped = min(o.cx, o.cy) <= o.side / 2 + 1e-6 or max(o.cx, o.cy) >= 64 - o.side / 2
            if not clamped:
                assert abs(o.cx - x) <= 0.04 * 64 + 1e-6 and abs(o.cy - y) <= 0.04 * 64 + 1e-6


def test_two_objects_do_not_overlap_and_hold_their_relation():
    relations = set()
    for i in range(300):
        s = make_sample(i, seed=4, num_objects=2)
        a, b = s["layout"]
        relations.add(s["spec"]["relation"])
        assert relation_holds(a, b, s["spec"]["relation"], RELATION_MARGIN * 32)
        al, at, ar, ab = a.box()
        bl, bt, br, bb = b.box()
        gap = shapes.GAP * 32 - 1e-6  # boxes stay apart, so soft edges do too
        assert ar + gap <= bl or br + gap <= al or ab + gap <= bt or bb + gap <= at
    assert relations == set(shapes.RELATIONS)


def test_spec_is_the_stated_subset_of_the_layout_and_the_caption_says_it():
    stated_size = stated_cell = 0
    for i in range(300):
        s = make_sample(i, seed=5)
        json.dumps(s["spec"])  # JSON-serialisable
        assert set(s["spec"]) == {"objects", "relation"}
        for obj, placed in zip(s["spec"]["objects"], s["layout"], strict=True):
            assert {"shape", "color"} <= obj.keys() <= {"shape", "color", "size", "cell"}
            assert all(attributes(placed)[k] == v for k, v in obj.items())
            for value in obj.values():
                assert value in s["caption"]
            stated_size += "size" in obj
            stated_cell += "cell" in obj
        assert caption_for(s["spec"]) in s["caption"]  # one template around the description
        if len(s["spec"]["objects"]) == 1:  # and nothing unstated slips in
            obj, words = s["spec"]["objects"][0], s["caption"].split()
            assert ("large" in words or "small" in words) == ("size" in obj)
            assert any(c in s["caption"] for c in CELLS) == ("cell" in obj)
    assert 0 < stated_size < 450 and 0 < stated_cell  # sizes and cells are sometimes left out


def test_paraphrase_templates_vary():
    samples = [make_sample(i, seed=6) for i in range(100)]
    templates = {s["caption"].replace(caption_for(s["spec"]), "{}") for s in samples}
    assert templates == set(shapes.TEMPLATES)


def test_captions_use_an_before_a_vowel():
    spec = {"objects": [{"shape": "circle", "color": "orange", "cell": "left"}], "relation": None}
    assert caption_for(spec) == "an orange circle on the left"


def test_holdout_never_in_train_always_in_holdout():
    held = [{"color": "purple", "shape": "triangle"}]
    for i in range(150):
        for o in make_sample(i, seed=8, holdout=held)["layout"]:
            assert not (o.color == "purple" and o.shape == "triangle")
        objs = make_sample(i, seed=8, holdout=held, split="holdout")["layout"]
        assert any(o.color == "purple" and o.shape == "triangle" for o in objs)
    with pytest.raises(ValueError, match="holdout"):
        make_sample(0, split="holdout")


def test_render_spec_fills_the_gaps_and_keeps_what_is_stated():
    from t2i.evaluation import judge

    spec = {
        "objects": [{"shape": "square", "color": "red"}, {"shape": "circle", "color": "blue"}],
        "relation": "left of",
    }
    for seed in range(10):
        assert judge(render_spec(spec, size=32, seed=seed), spec)["ok"]
    one = {
        "objects": [{"shape": "triangle", "color": "green", "size": "large", "cell": "top"}],
        "relation": None,
    }
    assert judge(render_spec(one, size=64), one)["ok"]


@pytest.mark.parametrize("size", [32, 64])
def test_dataset_gives_tensors_in_range(size):
    data = ShapesDataset(n=8, seed=0, size=size, num_objects=1)
    item = data[3]
    x = item["pixel_values"]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() <= 1.0
    assert item["caption"] == make_sample(3, 0, size, 1)["caption"]
    assert len(data) == 8
    with pytest.raises(IndexError):
        data[8]


def test_export_cli_writes_an_image_folder(tmp_path):
    assert shapes.main(["export", str(tmp_path / "out"), "--n", "12", "--seed", "3"]) == 0
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 12 and rows[0]["file_name"] == "00000.png"
    for i, row in enumerate(rows):
        sample = make_sample(i, seed=3)
        assert row["caption"] == sample["caption"] and row["spec"] == sample["spec"]
        from PIL import Image

        image = Image.open(tmp_path / "out" / row["file_name"])
        assert np.array_equal(np.asarray(image), np.asarray(sample["image"]))


def test_export_never_writes_over_an_earlier_export_unless_told_and_then_leaves_no_stale_image(
    tmp_path, capsys
):
    out = tmp_path / "out"
    assert shapes.main(["export", str(out), "--n", "6"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()  # the export's progress bar
    assert shapes.main(["export", str(out), "--n", "3", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: holds an earlier export; choose a new folder or pass --overwrite"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert shapes.main(["export", str(out), "--n", "3", "--seed", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"0000{i}.png" for i in range(3)] + [
        "metadata.jsonl"
    ]  # the earlier export's three other images are gone
    (out / "notes.txt").write_text("mine")
    assert shapes.main(["export", str(out), "--n", "2", "--overwrite"]) == 2
    assert "holds notes.txt, which the earlier export did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (out / "00002.png").is_file()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["{file}", "--n", "3"], "error: {file}: is a file; give a folder to export into"),
        (["{new}", "--n", "0"], "error: argument --n: 0: must be a whole number >= 1"),
        (["{new}", "--n", "3", "--size", "4"], "argument --size: 4: must be a whole number >= 16"),
    ],
)
def test_bad_export_input_is_a_one_line_error_that_writes_nothing(argv, says, tmp_path, capsys):
    file, new = tmp_path / "a_file", tmp_path / "new"
    file.write_text("")
    argv = [a.format(file=file, new=new) for a in argv]
    with pytest.raises(SystemExit) if "argument" in says else contextlib.nullcontext() as exit_:
        code = shapes.main(["export", *argv])
    code = exit_.value.code if "argument" in says else code
    err = capsys.readouterr().err.strip()
    assert code == 2 and says.format(file=file) in err and len(err.splitlines()) == 1
    assert not new.exists() and file.read_text() == ""


# run apart: the command line under runpy, then whether torch was imported when it refused
REFUSE = """import runpy, sys
sys.argv = ["t2i.data.shapes", *sys.argv[1:]]
try:
    runpy.run_module("t2i.data.shapes", run_name="__main__")
except SystemExit as exit_:
    print(exit_.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize("case", ["n0", "file", "used"])
def test_a_bad_export_is_refused_before_torch_is_imported(case, tmp_path):
    out = tmp_path / "out"
    argv = ["export", str(out), "--n", "0" if case == "n0" else "2"]
    if case == "file":
        out.write_text("mine")
    if case == "used":
        shapes.export(out, n=2)
    done = subprocess.run(
        [sys.executable, "-c", REFUSE, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_the_export_command_prints_no_runpy_warning(tmp_path):
    argv = [sys.executable, "-m", "t2i.data.shapes", "export", str(tmp_path / "o"), "--n", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


def test_cells_are_row_major():
    assert CELLS[0] == "top left" and CELLS[4] == "center" and CELLS[8] == "bottom right"
    assert cell_center("right", 30) == (25.0, 15.0)
