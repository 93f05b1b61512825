"""scripts/sweep_ldm.py: the sweep file's checks, the folder it lays out over a base, the
results table, and checkpoints scored once (the recipe, export, bundle and evaluation faked:
nothing trains)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import load_script

sweep_ldm = load_script("sweep_ldm")

T0 = 1_700_000_000.0  # the denoiser run's start (config.yaml's mtime) in the fakes


def fake_inputs(root: Path) -> dict:
    """A base with trained clip and autoencoder runs and a token cache, a data folder and an
    evaluation CLIP; the sweep's keys over them."""
    for run in ("clip", "autoencoder_kl"):
        (root / "base" / "runs" / run / "model").mkdir(parents=True)
        (root / "base" / "runs" / run / "model" / "config.json").write_text("{}")
    (root / "base" / "runs" / "token_cache").mkdir()
    (root / "data").mkdir()
    (root / "eval_clip").mkdir()
    return {
        "base": str(root / "base"),
        "data": str(root / "data"),
        "image_size": 32,
        "eval_clip": str(root / "eval_clip"),
        "n": 8,
        "recipe": ["clip.model.lock_text=true"],
        "candidates": {
            "preset": ["ldm.train.max_steps=1500", "ldm.train.checkpoint_every=500"],
            "wide": ["ldm.model.block_out_channels=[64,128]"],
        },
    }


def write_sweep(root: Path, keys: dict, name: str = "sweep.yaml") -> str:
    path = root / name
    path.write_text(yaml.safe_dump(keys))
    return str(path)


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """No test starts a real recipe (one that would is a failure)."""

    def start(cand):
        raise AssertionError(f"a real recipe was started for {cand.name}")

    monkeypatch.setattr(sweep_ldm, "start_recipe", start)


def refused(capsys, argv: list[str], needle: str) -> None:
    """main(argv) exits 2 with one line on stderr holding `needle`."""
    capsys.readouterr()
    assert sweep_ldm.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


BAD_FILES = [
    ("base: [unclosed\n", "not valid YAML"),
    ("candidates:\n  wide: [ldm.model.block_out_channels=[64,128]]\n", "not valid YAML"),
    ("- base\n", "expected a mapping"),
]
BAD_KEYS = [
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"n": None}, "n: expected int"),
    ({"n": 0}, "n: must be at least 1"),
    ({"image_size": "32"}, "image_size: expected int"),
    ({"recipe": "clip.model.lock_text=true"}, "recipe: expected a list"),
    ({"candidates": {}}, "no candidate"),
    ({"candidates": {"a": ["clip.model.lock_text=false"]}}, "start with 'ldm.'"),
    ({"candidates": {"a": [{"ldm.train.max_steps": 5}]}}, "no key=value"),
    ({"candidates": {"a/b": []}}, "no folder name"),
]


@pytest.mark.parametrize("text,needle", BAD_FILES)
def test_a_malformed_sweep_file_is_refused_and_nothing_is_made(tmp_path, capsys, text, needle):
    (tmp_path / "sweep.yaml").write_text(text)
    refused(capsys, [str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change,needle", BAD_KEYS)
def test_bad_keys_are_refused_and_nothing_is_made(tmp_path, capsys, change, needle):
    keys = fake_inputs(tmp_path)
    keys.update(change)
    refused(capsys, [write_sweep(tmp_path, keys), "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


def test_missing_keys_inputs_and_names_are_refused_before_any_work(tmp_path, capsys):
    keys = fake_inputs(tmp_path)
    out = ["--out", str(tmp_path / "out")]
    del keys["eval_clip"]
    refused(capsys, [write_sweep(tmp_path, keys), *out], "missing key 'eval_clip'")
    keys = fake_inputs(tmp_path / "again")
    sweep = write_sweep(tmp_path, keys)
    refused(capsys, [sweep, *out, "--only", "preset", "narrow"], "--only narrow: no such")
    os.remove(Path(keys["base"]) / "runs" / "autoencoder_kl" / "model" / "config.json")
    refused(capsys, [sweep, *out], "runs/autoencoder_kl has no trained model")
    (Path(keys["base"]) / "runs" / "token_cache").rmdir()
    refused(capsys, [sweep, *out], "no runs/token_cache")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_something_else_or_of_another_sweep_is_refused(tmp_path, capsys):
    keys = fake_inputs(tmp_path)
    sweep, out = write_sweep(tmp_path, keys), tmp_path / "out"
    (out / "wide").mkdir(parents=True)
    (out / "wide" / "notes.txt").write_text("mine")
    refused(capsys, [sweep, "--out", str(out)], "holds something else than a sweep")
    refused(capsys, [sweep, "--out", str(out / "wide" / "notes.txt")], "not a folder")
    other = sweep_ldm.load_sweep(write_sweep(tmp_path, {**keys, "n": 16}, "other.yaml"))
    (out / "wide" / "notes.txt").unlink()
    sweep_ldm.lay_out(out, other, "wide")  # an earlier sweep of `wide` at another n
    refused(capsys, [sweep, "--out", str(out), "--only", "wide"], "with another n (16)")
    assert sorted(p.name for p in out.iterdir()) == ["wide"]  # `preset` not begun


def test_the_folder_links_the_base_runs_and_is_taken_up_again(tmp_path):
    keys = fake_inputs(tmp_path)
    sweep = sweep_ldm.load_sweep(write_sweep(tmp_path, keys))
    out = tmp_path / "out"
    folder = sweep_ldm.lay_out(out, sweep, "wide")
    for name in ("clip", "autoencoder_kl", "token_cache"):
        link = folder / "runs" / name
        target = Path(os.readlink(link))
        assert link.is_symlink() and target.is_absolute()
        assert target == (tmp_path / "base" / "runs" / name).resolve()
    mark = json.loads((folder / "sweep.json").read_text())
    assert mark["identity"]["overrides"] == [
        "clip.model.lock_text=true",
        "ldm.model.block_out_channels=[64,128]",
    ]
    assert mark["ldm_started"] is None
    sweep_ldm.check_folder(out, sweep, "wide")  # the same candidate: resumed, not refused
    assert sweep_ldm.lay_out(out, sweep, "wide") == folder
    assert sorted(p.name for p in (folder / "runs").iterdir()) == [
        "autoencoder_kl",
        "clip",
        "token_cache",
    ]
    (folder / "runs" / "clip").unlink()
    (folder / "runs" / "clip").mkdir()  # as if the recipe had retrained it here
    with pytest.raises(sweep_ldm.SweepError, match="is no link to"):
        sweep_ldm.check_folder(out, sweep, "wide")
    assert sweep_ldm.base_replaced(folder) == "clip"


def line(candidate: str, step: int, r1: float, fid: float) -> dict:
    """A results.jsonl line as the sweep writes it."""
    return {
        "candidate": candidate,
        "step": step,
        "cpu_hours": step / 1000,
        "r_precision": {"train": r1, "cells": r1 / 2, "concepts": r1 / 4},
        "real_r_precision": {"train": 0.8, "cells": 0.5, "concepts": 0.5},
        "style_right": {"cells": 0.6},
        "real_style_right": {"cells": 0.75},
        "clip_fid": fid,
        "clip_fid_floor": 4.0,
    }


def test_the_table_is_sorted_with_ratios_to_the_ceilings(tmp_path):
    rows = [line("wide", 3000, 0.4, 10.0), line("preset", 3000, 0.36, 12.0)]
    rows += [line("preset", 1500, 0.2, 20.0), line("wide", 3000, 0.48, 9.0)]  # a later line wins
    table = sweep_ldm.render_table(rows).splitlines()
    head = next(i for i, t in enumerate(table) if t.startswith("| candidate"))
    assert table[head] == (
        "| candidate | step | CPU-h | R@1 train | R@1 cells | R@1 concepts "
        "| style right (cells) | CLIP-FID (x floor) |"
    )
    body = table[head + 2 :]
    assert body == [
        "| preset | 1500 | 1.50 | 0.200 (0.25) | 0.100 (0.20) | 0.050 (0.10) "
        "| 0.600 (0.80) | 20.00 (5.00x) |",
        "| preset | 3000 | 3.00 | 0.360 (0.45) | 0.180 (0.36) | 0.090 (0.18) "
        "| 0.600 (0.80) | 12.00 (3.00x) |",
        "| wide | 3000 | 3.00 | 0.480 (0.60) | 0.240 (0.48) | 0.120 (0.24) "
        "| 0.600 (0.80) | 9.00 (2.25x) |",
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep_ldm.write_table(tmp_path)
    assert (tmp_path / "results.md").read_text().splitlines() == table


def report(step: int) -> dict:
    """A captioned suite's report, its ldm figures growing with the step."""
    ldm = {"r_precision_train": step / 10_000, "r_precision_cells": step / 20_000}
    ldm.update(style_right_cells=0.5, clip_fid=8.0, images_per_s=3.0)
    real = {"r_precision_train": 0.9, "r_precision_cells": 0.6, "style_right_cells": 0.9}
    real.update(clip_fid_floor=2.0)
    return {"n": {"train": 8, "cells": 8}, "real": real, "routes": {"ldm": ldm}}


def checkpoint(folder: Path, step: int) -> None:
    """A complete checkpoint of the denoiser run, written `step` seconds after its start."""
    ckpt = folder / "runs" / "ldm" / "checkpoints" / f"checkpoint-{step:07d}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    os.utime(ckpt, (T0 + step, T0 + step))


class FakeRecipe:
    """The recipe's process: its first wait times out once the run has started and written
    two checkpoints; the second writes the last one and the assembled pipeline, and ends."""

    pid = 0

    def __init__(self, cand, waits: int):
        self.folder, self.waits = cand.folder, waits
        config = self.folder / "runs" / "ldm" / "config.yaml"
        if not config.exists():
            config.parent.mkdir(parents=True)
            config.write_text("model: {}\n")
            os.utime(config, (T0, T0))
            checkpoint(self.folder, 1800)
            checkpoint(self.folder, 3600)

    def wait(self, timeout: float | None = None) -> int:
        self.waits -= 1
        if self.waits > 0:
            raise subprocess.TimeoutExpired("recipe", timeout)
        if not (self.folder / "model_index.json").exists():
            checkpoint(self.folder, 5400)
            (self.folder / "model_index.json").write_text("{}")
        return 0


def test_checkpoints_are_scored_as_they_appear_and_never_twice(tmp_path, monkeypatch):
    keys = fake_inputs(tmp_path)
    (tmp_path / "base" / "model_index.json").write_text("{}")  # a saved pipeline
    (tmp_path / "base" / "heldout.json").write_text('{"held_out": []}')
    keys["candidates"] = {"preset": keys["candidates"]["preset"]}
    sweep, out = write_sweep(tmp_path, keys), tmp_path / "out"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep_ldm, "POLL_S", 0.01)
    started, scored = [], []

    def start(cand):
        started.append((sweep_ldm.recipe_command(cand), cand.env["OMP_NUM_THREADS"]))
        return FakeRecipe(cand, waits=2 if len(started) == 1 else 1)

    def export(cand, ckpt, dest):
        dest.mkdir()

    def bundle(cand, base, unet, dest):
        assert unet.is_dir()
        dest.mkdir()
        scored.append([int(unet.parent.name.rsplit("-", 1)[1]), base])

    def evaluate(cand, bundle_dir, report_path):
        report_path.write_text(json.dumps(report(scored[-1][0])))

    for name, fake in [("start_recipe", start), ("export_model", export)]:
        monkeypatch.setattr(sweep_ldm, name, fake)
    monkeypatch.setattr(sweep_ldm, "make_bundle", bundle)
    monkeypatch.setattr(sweep_ldm, "run_evaluation", evaluate)
    folder = out / "preset"
    earlier = {"candidate": "preset", "step": 1800, "r_precision": {"train": 0.9}}
    out.mkdir()
    (out / "results.jsonl").write_text(json.dumps(earlier) + "\n")  # already scored

    assert sweep_ldm.main([sweep, "--out", str(out)]) == 0
    command, threads = started[0]
    assert threads == "1" and command[-1] == "ldm.train.checkpoints_total_limit=1000"
    assert "output_dir=" + str(folder) in command and "model.routes=[ldm]" in command
    base = Path(keys["base"])
    assert scored == [[3600, base], [5400, folder]]  # during the run over BASE, then OUT/NAME
    rows = [json.loads(t) for t in (out / "results.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1800, 3600, 5400]
    assert rows[1]["cpu_hours"] == 1.0 and rows[2]["cpu_hours"] == 1.5
    assert rows[1]["overrides"] == ["clip.model.lock_text=true", *keys["candidates"]["preset"]]
    assert rows[2]["r_precision"] == {"train": 0.54, "cells": 0.27}
    assert rows[2]["real_r_precision"] == {"train": 0.9, "cells": 0.6}
    assert rows[2]["clip_fid_over_floor"] == 4.0 and rows[2]["images_per_s"] == 3.0
    assert sorted(p.name for p in (folder / "scores").iterdir()) == [
        "step-3600.json",
        "step-5400.json",
    ]
    assert not list(folder.glob("tmp-*"))  # the exported models and bundles deleted
    assert (
        "| preset | 5400 | 1.50 | 0.540 (0.60) | 0.270 (0.45) | 0.500 (0.56) | 8.00 (4.00x) |"
        in (out / "results.md").read_text()
    )

    assert sweep_ldm.main([sweep, "--out", str(out)]) == 0  # again: resumed, nothing rescored
    assert len(started) == 2 and len(scored) == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


def test_cpu_hours_count_the_threads_the_environment_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env, threads = sweep_ldm.thread_env()
    assert env["OMP_NUM_THREADS"] == "2" and threads == 2  # kept, not set to 1
    sweep = sweep_ldm.load_sweep(write_sweep(tmp_path, fake_inputs(tmp_path)))
    cand = sweep_ldm.Candidate("wide", sweep, tmp_path / "out", env, threads)
    folder = sweep_ldm.lay_out(cand.out, sweep, "wide")
    FakeRecipe(cand, waits=1)  # the run started at T0, a checkpoint an hour later
    ckpt = sweep_ldm.checkpoints(folder)[3600]
    row = sweep_ldm.make_row(cand, 3600, ckpt, report(3600))
    assert row["cpu_hours"] == 2.0 and row["threads"] == 2
    assert json.loads((folder / "sweep.json").read_text())["ldm_started"] == T0


def test_the_time_between_a_kill_and_the_rerun_is_not_counted(tmp_path):
    env, threads = {"OMP_NUM_THREADS": "1"}, 1
    sweep = sweep_ldm.load_sweep(write_sweep(tmp_path, fake_inputs(tmp_path)))
    cand = sweep_ldm.Candidate("wide", sweep, tmp_path / "out", env, threads)
    folder = sweep_ldm.lay_out(cand.out, sweep, "wide")
    FakeRecipe(cand, waits=1)  # started at T0, checkpoints at T0 + 1800 and T0 + 3600
    sweep_ldm.note_start(folder)
    # killed after its last checkpoint; run again 2 hours after that checkpoint
    sweep_ldm.note_resume(folder, T0 + 3600 + 7200)
    checkpoint(folder, 3600 + 7200 + 1800)  # the resumed run's next, half an hour on
    step = 3600 + 7200 + 1800
    row = sweep_ldm.make_row(cand, step, sweep_ldm.checkpoints(folder)[step], report(step))
    assert row["cpu_hours"] == 1.5  # one hour before the kill, half an hour after the rerun
    first = sweep_ldm.make_row(cand, 3600, sweep_ldm.checkpoints(folder)[3600], report(3600))
    assert first["cpu_hours"] == 1.0  # the pause came later
    sweep_ldm.note_resume(folder, T0 + 20000)  # a second rerun adds its own pause
    marks = json.loads((folder / "sweep.json").read_text())["paused"]
    assert marks == [[T0 + 3600, T0 + 10800], [T0 + step, T0 + 20000]]


def test_a_recipe_that_retrains_a_base_stage_is_stopped(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path, fake_inputs(tmp_path))
    monkeypatch.setattr(sweep_ldm, "POLL_S", 0.01)
    stopped = []

    class Retraining(FakeRecipe):
        def terminate(self) -> None:
            stopped.append(self.folder.name)
            self.waits = 1

    def start(cand):
        clip = cand.folder / "runs" / "clip"
        clip.rename(clip.with_name("clip.1"))  # the recipe set the lent run aside
        return Retraining(cand, waits=5)

    monkeypatch.setattr(sweep_ldm, "start_recipe", start)
    assert sweep_ldm.main([sweep, "--out", str(tmp_path / "out"), "--only", "wide"]) == 1
    assert stopped == ["wide"]
    assert (tmp_path / "base" / "runs" / "clip" / "model").is_dir()  # the base's, untouched
