"""The latent-diffusion denoiser's quality against CPU-hours: several candidates trained over
one base's CLIP and autoencoder, each checkpoint scored by the captioned suite as it appears.

    python scripts/sweep_ldm.py configs/custom/sweeps/ldm32.yaml --out runs/sweep_a \
        [--only NAME ...]

SWEEP.yaml (every key but `recipe` required, no other key; configs/custom/sweeps/ldm32.yaml):

    base: runs/emoji/lit32        # a recipe output: its runs/clip, runs/autoencoder_kl (both
                                  # trained) and runs/token_cache (the cached latents) are reused
    data: data/emoji              # the data set the base trained on
    image_size: 32
    eval_clip: runs/emoji/eval_clip32   # the evaluation CLIP (t2i.evaluate --eval-clip)
    n: 128                        # captions per part in each evaluation (--n)
    recipe: [clip.model.text_model=weights/all-MiniLM-L6-v2, clip.model.lock_text=true]
                                  # the base's own recipe keys, so its stages are kept
    candidates:                   # NAME: its `ldm.section.key=value` overrides, run in order
      preset: [ldm.train.max_steps=6000, ldm.train.checkpoint_every=1500]
      wide: ['ldm.model.block_out_channels=[64,128]', ldm.train.max_steps=6000]

Quote an override whose value holds `[`, `]` or `,` (YAML reads a bare one as a nested
list). Candidates vary the denoiser alone: their keys start with `ldm.`. Paths are as seen
from the folder the sweep runs in, where the recipe runs too. For each candidate (only those
of --only, when given):

1. OUT/NAME/runs/ gets links to BASE/runs/clip, autoencoder_kl and token_cache (absolute
   targets) and OUT/NAME/sweep.json what the candidate is, so the recipe keeps those stages
   and trains the denoiser alone, into OUT/NAME/runs/ldm.
2. The recipe runs as a subprocess, its output in OUT/NAME/train.log:
   `python -m t2i.train configs/custom/pipeline.yaml data.path=DATA image_size=SIZE
   output_dir=OUT/NAME 'model.routes=[ldm]' RECIPE... CANDIDATE...`, and
   `ldm.train.checkpoints_total_limit=1000` unless the candidate sets it (no checkpoint is
   pruned before it is scored). Its environment has OMP_NUM_THREADS=1 unless the sweep's sets
   it: one CPU thread per candidate, so two sweeps run side by side on two cores.
3. Every minute while it runs, and once after it ends, each checkpoint of OUT/NAME/runs/ldm
   not scored yet is exported (scripts/export_checkpoint.py: its EMA weights), made a bundle
   (scripts/with_ldm.py) over OUT/NAME once the recipe has assembled it, over BASE before
   (the same CLIP and autoencoder; without BASE/model_index.json scoring waits for the end),
   given that bundle base's heldout.json (the split and its parts), and scored:
   `python -m t2i.evaluate BUNDLE --suite captioned --data DATA --eval-clip EVAL_CLIP --n N
   --routes ldm` (same OMP_NUM_THREADS; output in OUT/NAME/eval.log). The report is kept in
   OUT/NAME/scores/step-N.json, the exported model and bundle deleted, and one JSON line
   appended to OUT/results.jsonl: `candidate`, `step`, `cpu_hours`, `threads`, `overrides`
   (recipe's and candidate's), `n`, and the figures: `r_precision` and `real_r_precision`
   (R@1 per part, the route's and the real images' ceiling), `style_right` and
   `real_style_right` (per part), `clip_fid`, `clip_fid_floor`, `clip_fid_over_floor`,
   `images_per_s`.
4. OUT/results.md is written again after each line (and at the end): a row per (candidate,
   step), sorted by candidate then step (`render_table`).

cpu_hours: the checkpoint folder's modification time minus the denoiser run's start (the
modification time of runs/ldm/config.yaml, written once the latents are cached; recorded in
sweep.json when first seen, as a resumed run rewrites it), less the pauses, in hours, times
the threads used. A pause: when a sweep killed with its recipe is run again, the time from
its newest checkpoint (where the recipe resumes) to the rerun, recorded in sweep.json's
`paused`; the work lost after that checkpoint is not counted, its redoing is. Evaluations run
beside the training, one more thread while they last.

Nothing is overwritten: results.jsonl is appended to, a scored checkpoint is never scored
again, and running the same sweep again resumes each candidate (the recipe resumes its
stage). Refused with one line, exit 2, before anything is written: a malformed SWEEP.yaml
(unknown or missing keys, values of the wrong kind), an --only name it lacks, a BASE without
the trained runs, a data set or evaluation CLIP that is not there, an OUT/NAME holding
anything but an earlier sweep of the same candidate (same base, data, size, keys, n and
evaluation CLIP). A recipe that retrains a base stage (its keys differ from the base's) is
stopped within a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from t2i.runs import PREFIX, list_checkpoints

logger = logging.getLogger("sweep_ldm")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "custom" / "pipeline.yaml"
SCRIPTS = ROOT / "scripts"
REQUIRED = {"base": str, "data": str, "image_size": int, "eval_clip": str, "n": int}
OPTIONAL = {"recipe"}
LINKED = ("clip", "autoencoder_kl", "token_cache")  # BASE/runs/X, linked into OUT/NAME/runs
TRAINED = ("clip", "autoencoder_kl")  # of those, the runs that must hold a model
MARK = "sweep.json"  # in OUT/NAME: what the candidate is, and when its denoiser started
KEEP_ALL = "ldm.train.checkpoints_total_limit=1000"
POLL_S = 60.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TABLE_PARTS = ("train", "cells", "concepts", "heldout")  # R@1 columns, those some row has
STYLE_PARTS = ("cells", "heldout")  # the style column: the first some row has


class SweepError(ValueError):
    """A sweep refused before any work (one line)."""


class Sweep(NamedTuple):
    """A sweep file, read and checked.

    Args:
        base: the recipe output whose clip and autoencoder runs are reused.
        data: the data set.
        image_size: its image size.
        eval_clip: the evaluation CLIP (a run or saved model).
        n: captions per part in each evaluation.
        recipe: the base's recipe keys.
        candidates: name -> its `ldm.` overrides, in the file's order.
    """

    base: Path
    data: str
    image_size: int
    eval_clip: str
    n: int
    recipe: list[str]
    candidates: dict[str, list[str]]


class Candidate(NamedTuple):
    """One candidate of a sweep, as it runs.

    Args:
        name: its name.
        sweep: the sweep.
        out: the sweep's output folder (results.jsonl, results.md).
        env: the environment of its subprocesses.
        threads: the CPU threads each of them uses.
    """

    name: str
    sweep: Sweep
    out: Path
    env: dict[str, str]
    threads: int

    @property
    def folder(self) -> Path:
        """OUT/NAME: the recipe's output."""
        return self.out / self.name

    @property
    def overrides(self) -> list[str]:
        """The recipe's keys, then the candidate's."""
        return [*self.sweep.recipe, *self.sweep.candidates[self.name]]


# ---- the sweep file ------------------------------------------------------------------------


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (the module docstring gives its format).

    Args:
        path: the YAML file.

    Raises:
        SweepError: a missing file, bad YAML, an unknown or missing key, a wrong value.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise SweepError(f"{path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        text = " ".join(str(err).split())
        raise SweepError(f"{path}: not valid YAML ({text}); quote overrides holding [ ] ,") from err
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of {', '.join(REQUIRED)}, candidates")
    _check_keys(raw, str(path))
    return Sweep(
        base=Path(raw["base"]),
        data=raw["data"],
        image_size=raw["image_size"],
        eval_clip=raw["eval_clip"],
        n=raw["n"],
        recipe=_overrides(raw.get("recipe", []), f"{path}: recipe"),
        candidates=_candidates(raw["candidates"], f"{path}: candidates"),
    )


def _check_keys(raw: dict, where: str) -> None:
    """Unknown, missing and mistyped top-level keys (`candidates` is checked apart)."""
    unknown = sorted(set(raw) - set(REQUIRED) - OPTIONAL - {"candidates"}, key=str)
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}")
    for key, kind in {**REQUIRED, "candidates": dict}.items():
        if key not in raw:
            raise SweepError(f"{where}: missing key {key!r}")
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SweepError(f"{where}: {key}: expected {kind.__name__}, got {value!r}")
        if kind is int and value < 1:
            raise SweepError(f"{where}: {key}: must be at least 1, got {value}")


def _overrides(value: Any, where: str, prefix: str = "") -> list[str]:
    """A list of `key=value` strings (each starting with `prefix`)."""
    if not isinstance(value, list):
        raise SweepError(f"{where}: expected a list of key=value, got {value!r}")
    for item in value:
        if not isinstance(item, str) or "=" not in item:
            raise SweepError(f"{where}: {item!r} is no key=value string (quote it)")
        if not item.startswith(prefix):
            raise SweepError(f"{where}: {item!r}: a candidate's keys start with {prefix!r}")
    return list(value)


def _candidates(value: dict, where: str) -> dict[str, list[str]]:
    """name -> its `ldm.` overrides, names fit for a folder."""
    if not value:
        raise SweepError(f"{where}: no candidate")
    found = {}
    for name, overrides in value.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise SweepError(f"{where}: {name!r} is no folder name (letters, digits, _ . -)")
        found[name] = _overrides(overrides, f"{where}: {name}", prefix="ldm.")
    return found


def chosen(sweep: Sweep, only: list[str] | None) -> list[str]:
    """The candidates to run, in the file's order (those of `only`, when given).

    Args:
        sweep: the sweep.
        only: --only's names, or None.
    """
    unknown = [n for n in only or [] if n not in sweep.candidates]
    if unknown:
        raise SweepError(
            f"--only {unknown[0]}: no such candidate (the sweep has {', '.join(sweep.candidates)})"
        )
    return [n for n in sweep.candidates if only is None or n in only]


# ---- checks and layout ---------------------------------------------------------------------


def check_inputs(sweep: Sweep) -> None:
    """A SweepError when BASE lacks a run it lends (clip and autoencoder trained), or the
    data set or evaluation CLIP is not there.

    Args:
        sweep: the sweep.
    """
    for name in LINKED:
        if not (sweep.base / "runs" / name).is_dir():
            raise SweepError(f"base {sweep.base}: no runs/{name} (train the base recipe first)")
    for name in TRAINED:
        if not (sweep.base / "runs" / name / "model" / "config.json").is_file():
            raise SweepError(f"base {sweep.base}: runs/{name} has no trained model/ yet")
    for key, path in (("data", sweep.data), ("eval_clip", sweep.eval_clip)):
        if not Path(path).exists():
            raise SweepError(f"{key} {path}: no such file or folder")


def identity(sweep: Sweep, name: str) -> dict[str, Any]:
    """What makes a candidate's folder its own: the base, data, size, keys and evaluation."""
    return {
        "candidate": name,
        "base": str(sweep.base.resolve()),
        "data": sweep.data,
        "image_size": sweep.image_size,
        "overrides": [*sweep.recipe, *sweep.candidates[name]],
        "n": sweep.n,
        "eval_clip": sweep.eval_clip,
    }


def check_folder(out: Path, sweep: Sweep, name: str) -> None:
    """A SweepError when OUT/NAME holds anything but an earlier sweep of this candidate.

    Args:
        out: the sweep's output folder.
        sweep: the sweep.
        name: the candidate.
    """
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out}: not a folder")
    folder = out / name
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not (folder / MARK).is_file():
        raise SweepError(f"{folder} holds something else than a sweep; choose another --out")
    try:
        recorded = json.loads((folder / MARK).read_text())["identity"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SweepError(f"{folder / MARK}: not a sweep's record ({err})") from err
    mine = identity(sweep, name)
    changed = [k for k in mine if recorded.get(k) != mine[k]]
    if changed:
        key = changed[0]
        raise SweepError(
            f"{folder} holds a sweep of {recorded.get('candidate')!r} with another {key} "
            f"({recorded.get(key)!r}); choose another --out"
        )
    for link, target in links(folder, sweep).items():
        if (link.exists() or link.is_symlink()) and not _links_to(link, target):
            raise SweepError(f"{link} is no link to {target}; choose another --out")


def links(folder: Path, sweep: Sweep) -> dict[Path, Path]:
    """OUT/NAME/runs/X -> BASE/runs/X (absolute), for each run lent."""
    return {folder / "runs" / n: (sweep.base / "runs" / n).resolve() for n in LINKED}


def _links_to(link: Path, target: Path) -> bool:
    return link.is_symlink() and Path(os.readlink(link)) == target


def lay_out(out: Path, sweep: Sweep, name: str) -> Path:
    """Make OUT/NAME: its links to the base's runs and its sweep.json (kept when there);
    return the folder.

    Args:
        out: the sweep's output folder.
        sweep: the sweep.
        name: the candidate (its folder checked by `check_folder`).
    """
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARK).is_file():  # first, so a folder of ours always says so
        _write_mark(folder, {"identity": identity(sweep, name), "ldm_started": None})
    (folder / "runs").mkdir(exist_ok=True)
    for link, target in links(folder, sweep).items():
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return folder


def _write_mark(folder: Path, mark: dict[str, Any]) -> None:
    tmp = folder / f".{MARK}.tmp"
    tmp.write_text(json.dumps(mark, indent=1) + "\n")
    os.replace(tmp, folder / MARK)


def note_start(folder: Path) -> float | None:
    """The denoiser run's start (runs/ldm/config.yaml's mtime when first seen, recorded in
    sweep.json), or None before it starts."""
    mark = json.loads((folder / MARK).read_text())
    config = folder / "runs" / "ldm" / "config.yaml"
    if mark.get("ldm_started") is None and config.is_file():
        mark["ldm_started"] = config.stat().st_mtime
        _write_mark(folder, mark)
    return mark.get("ldm_started")


def note_resume(folder: Path, now: float) -> None:
    """On a rerun of a candidate whose denoiser had started: record in sweep.json's `paused`
    the time from its newest checkpoint (what the resumed run starts from) to `now`, which
    no CPU-hour figure counts (the work after that checkpoint was lost, and redone)."""
    mark = json.loads((folder / MARK).read_text())
    saved = checkpoints(folder)
    if mark.get("ldm_started") is None or not saved:
        return
    last = saved[max(saved)].stat().st_mtime
    mark.setdefault("paused", []).append([last, now])
    _write_mark(folder, mark)


def paused_before(folder: Path, moment: float) -> float:
    """Seconds of the recorded pauses that ended before `moment`."""
    mark = json.loads((folder / MARK).read_text())
    return sum(max(0.0, end - begin) for begin, end in mark.get("paused", []) if end <= moment)


def base_replaced(folder: Path) -> str | None:
    """The lent run the recipe set aside to retrain it (its inputs differ), or None."""
    for name in TRAINED:
        if not (folder / "runs" / name).is_symlink() or (folder / "runs" / f"{name}.1").exists():
            return name
    return None


# ---- subprocesses --------------------------------------------------------------------------


def thread_env() -> tuple[dict[str, str], int]:
    """The subprocesses' environment (OMP_NUM_THREADS=1 unless set) and their thread count."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        threads = int(env["OMP_NUM_THREADS"].split(",")[0])
    except ValueError:
        threads = 1
    return env, max(threads, 1)


def recipe_command(cand: Candidate) -> list[str]:
    """The recipe's command line for a candidate (module docstring, step 2)."""
    sweep = cand.sweep
    keep = [] if any("checkpoints_total_limit=" in o for o in cand.overrides) else [KEEP_ALL]
    return [
        sys.executable,
        "-m",
        "t2i.train",
        str(RECIPE),
        f"data.path={sweep.data}",
        f"image_size={sweep.image_size}",
        f"output_dir={cand.folder}",
        "model.routes=[ldm]",
        *cand.overrides,
        *keep,
    ]


def start_recipe(cand: Candidate) -> subprocess.Popen:
    """Start the candidate's recipe, its output appended to OUT/NAME/train.log.

    Args:
        cand: the candidate.
    """
    with open(cand.folder / "train.log", "a") as log:
        return subprocess.Popen(
            recipe_command(cand), stdout=log, stderr=subprocess.STDOUT, env=cand.env
        )


def _call(what: str, command: list[str], log: Path, env: dict[str, str]) -> None:
    """Run a command, its output appended to `log`; a RuntimeError naming `what` when it
    fails."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        rc = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"{what} failed (exit {rc}; see {log})")


def export_model(cand: Candidate, ckpt: Path, dest: Path) -> None:
    """A checkpoint's model (EMA weights) saved to `dest` (scripts/export_checkpoint.py).

    Args:
        cand: the candidate.
        ckpt: its checkpoint folder.
        dest: the model folder to write.
    """
    command = [sys.executable, str(SCRIPTS / "export_checkpoint.py"), str(ckpt), str(dest)]
    _call("export_checkpoint.py", command, cand.folder / "eval.log", cand.env)


def make_bundle(cand: Candidate, base: Path, unet: Path, dest: Path) -> None:
    """The bundle at `base` with the candidate's autoencoder run and the denoiser `unet`
    (scripts/with_ldm.py), saved to `dest` with the base's heldout.json.

    Args:
        cand: the candidate.
        base: the bundle base (a saved pipeline).
        unet: the exported denoiser.
        dest: the bundle to write.
    """
    runs = cand.folder / "runs"
    command = [
        sys.executable,
        str(SCRIPTS / "with_ldm.py"),
        str(base),
        str(runs / "autoencoder_kl"),
    ]
    command += [str(unet), str(dest), "--unet-config", str(runs / "ldm" / "config.yaml")]
    _call("with_ldm.py", command, cand.folder / "eval.log", cand.env)
    if (base / "heldout.json").is_file():
        shutil.copy(base / "heldout.json", dest / "heldout.json")


def run_evaluation(cand: Candidate, bundle: Path, report: Path) -> None:
    """The captioned suite on the bundle's latent diffusion route, its JSON to `report`.

    Args:
        cand: the candidate.
        bundle: the bundle.
        report: the JSON file to write.
    """
    sweep = cand.sweep
    command = [sys.executable, "-m", "t2i.evaluate", str(bundle), "--suite", "captioned"]
    command += ["--data", sweep.data, "--eval-clip", sweep.eval_clip, "--n", str(sweep.n)]
    command += ["--routes", "ldm", "--out", str(report)]
    _call("t2i.evaluate", command, cand.folder / "eval.log", cand.env)


# ---- scoring -------------------------------------------------------------------------------


def checkpoints(folder: Path) -> dict[int, Path]:
    """step -> complete checkpoint of OUT/NAME/runs/ldm, oldest first."""
    found = list_checkpoints(folder / "runs" / "ldm")
    return {int(p.name[len(PREFIX) :]): p for p in found}


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The lines of OUT/results.jsonl (a torn last line skipped)."""
    path = out / "results.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping a line that is no JSON: %.60s", path, line)
    return rows


def bundle_base(cand: Candidate, finished: bool) -> Path | None:
    """The saved pipeline a checkpoint's bundle is made over: OUT/NAME once the recipe has
    ended (and assembled it), else BASE; None when it is no saved pipeline."""
    order = [cand.folder, cand.sweep.base] if finished else [cand.sweep.base]
    return next((p for p in order if (p / "model_index.json").is_file()), None)


def score_new(cand: Candidate, failed: set[int], finished: bool) -> None:
    """Score each checkpoint of the candidate not scored yet (nor failed in this run).

    Args:
        cand: the candidate.
        failed: steps whose scoring failed in this run (added to; not tried again).
        finished: whether the recipe has ended.
    """
    base = bundle_base(cand, finished)
    if base is None:
        logger.info("%s: no saved pipeline to score over yet; waiting for the recipe", cand.name)
        return
    done = {(r.get("candidate"), r.get("step")) for r in read_rows(cand.out)}
    for step, ckpt in checkpoints(cand.folder).items():
        if (cand.name, step) in done or step in failed:
            continue
        try:
            score_checkpoint(cand, step, ckpt, base)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            failed.add(step)
            logger.error("%s step %d: not scored: %s", cand.name, step, err)


def score_checkpoint(cand: Candidate, step: int, ckpt: Path, base: Path) -> dict[str, Any]:
    """Evaluate one checkpoint (unless its report is kept), append its line to
    results.jsonl and write results.md again; return the line.

    Args:
        cand: the candidate.
        step: the checkpoint's step.
        ckpt: its folder.
        base: the bundle base.
    """
    report = cand.folder / "scores" / f"step-{step}.json"
    if not report.is_file():
        evaluate_checkpoint(cand, ckpt, base, report)
    row = make_row(cand, step, ckpt, json.loads(report.read_text()))
    with open(cand.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    write_table(cand.out)
    logger.info("%s step %d: %s", cand.name, step, json.dumps(row["r_precision"]))
    return row


def evaluate_checkpoint(cand: Candidate, ckpt: Path, base: Path, report: Path) -> None:
    """Export, bundle and score a checkpoint in a scratch folder (deleted after); the report
    moved into place only once complete."""
    work = cand.folder / f"tmp-{ckpt.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        export_model(cand, ckpt, work / "unet")
        make_bundle(cand, base, work / "unet", work / "bundle")
        run_evaluation(cand, work / "bundle", work / "report.json")
        report.parent.mkdir(exist_ok=True)
        os.replace(work / "report.json", report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_row(cand: Candidate, step: int, ckpt: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The results.jsonl line of a scored checkpoint.

    Args:
        cand: the candidate.
        step: the checkpoint's step.
        ckpt: its folder (its mtime ends the CPU time).
        report: the captioned suite's report.
    """
    start = note_start(cand.folder)
    if start is None:
        start = (cand.folder / "runs" / "ldm" / "config.yaml").stat().st_mtime
    end = ckpt.stat().st_mtime
    hours = (end - start - paused_before(cand.folder, end)) / 3600 * cand.threads
    return {
        "candidate": cand.name,
        "step": step,
        "cpu_hours": round(hours, 4),
        "threads": cand.threads,
        "overrides": cand.overrides,
        "n": report.get("n"),
        **figures(report),
    }


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The figures a results line keeps from a captioned suite's report (its ldm route).

    Args:
        report: the report (`routes.ldm`, `real`).
    """
    route, real = report["routes"]["ldm"], report["real"]
    fid, floor = route.get("clip_fid"), real.get("clip_fid_floor")
    return {
        "r_precision": _per_part(route, "r_precision_"),
        "real_r_precision": _per_part(real, "r_precision_"),
        "style_right": _per_part(route, "style_right_"),
        "real_style_right": _per_part(real, "style_right_"),
        "clip_fid": fid,
        "clip_fid_floor": floor,
        "clip_fid_over_floor": fid / floor if fid is not None and floor else None,
        "images_per_s": route.get("images_per_s"),
    }


def _per_part(figures: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in figures.items() if k.startswith(prefix)}


# ---- the table -----------------------------------------------------------------------------


def render_table(rows: list[dict[str, Any]]) -> str:
    """results.md: a row per (candidate, step), sorted by both (a later line of the same pair
    wins); R@1 and style right with their ratio to the real images' ceiling, CLIP-FID with
    its ratio to the floor.

    Args:
        rows: results.jsonl's lines.
    """
    latest = {(r["candidate"], r["step"]): r for r in rows}
    ordered = [latest[k] for k in sorted(latest)]
    parts = [p for p in TABLE_PARTS if any(p in r.get("r_precision", {}) for r in ordered)]
    style = next(
        (p for p in STYLE_PARTS if any(p in r.get("style_right", {}) for r in ordered)), "cells"
    )
    head = ["candidate", "step", "CPU-h", *(f"R@1 {p}" for p in parts)]
    head += [f"style right ({style})", "CLIP-FID (x floor)"]
    lines = [
        "# Latent diffusion sweep",
        "",
        "R@1 and style right: the route's, in brackets its ratio to the real images' "
        "(the ceiling). CLIP-FID: in brackets its ratio to the floor (real training images "
        "against the real held-out ones).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    lines += [_table_row(r, parts, style) for r in ordered]
    return "\n".join(lines) + "\n"


def _table_row(row: dict[str, Any], parts: list[str], style: str) -> str:
    """One row of results.md."""
    real, r1 = row.get("real_r_precision", {}), row.get("r_precision", {})
    cells = [row["candidate"], str(row["step"]), _number(row.get("cpu_hours"), 2)]
    cells += [_with_ratio(r1.get(p), real.get(p)) for p in parts]
    right, real_right = row.get("style_right", {}), row.get("real_style_right", {})
    cells.append(_with_ratio(right.get(style), real_right.get(style)))
    fid, floor = row.get("clip_fid"), row.get("clip_fid_floor")
    cells.append(_with_ratio(fid, floor, digits=2, suffix="x"))
    return "| " + " | ".join(cells) + " |"


def _with_ratio(value: Any, ceiling: Any, digits: int = 3, suffix: str = "") -> str:
    """`value (value / ceiling)`, "-" for no value."""
    if value is None:
        return "-"
    if not ceiling:
        return _number(value, digits)
    return f"{_number(value, digits)} ({value / ceiling:.2f}{suffix})"


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_table(out: Path) -> None:
    """Write OUT/results.md from OUT/results.jsonl (atomically).

    Args:
        out: the sweep's output folder.
    """
    tmp = out / f".results.md.{os.getpid()}"
    tmp.write_text(render_table(read_rows(out)))
    os.replace(tmp, out / "results.md")


# ---- the sweep -----------------------------------------------------------------------------


def run_candidate(cand: Candidate) -> bool:
    """Train a candidate, scoring its checkpoints as they appear; whether all went well.

    Args:
        cand: the candidate (its folder laid out).
    """
    note_resume(cand.folder, time.time())
    note_start(cand.folder)
    proc = start_recipe(cand)
    logger.info("%s: training (pid %d), log %s", cand.name, proc.pid, cand.folder / "train.log")
    failed: set[int] = set()
    try:
        rc = watch(cand, proc, failed)
    except BaseException:  # an interrupted sweep leaves no recipe behind
        proc.terminate()
        raise
    if rc is None:
        return False
    score_new(cand, failed, finished=True)
    if rc != 0:
        log = cand.folder / "train.log"
        logger.error("%s: the recipe failed (exit %d); see %s", cand.name, rc, log)
    return rc == 0 and not failed


def watch(cand: Candidate, proc: subprocess.Popen, failed: set[int]) -> int | None:
    """Score new checkpoints every POLL_S seconds until the recipe ends; its exit status, or
    None when it was stopped for retraining a base stage.

    Args:
        cand: the candidate.
        proc: its recipe.
        failed: steps whose scoring failed (added to).
    """
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        replaced = base_replaced(cand.folder)
        if replaced:
            proc.terminate()
            proc.wait()
            logger.error(
                "%s: the recipe retrained the base's %s (SWEEP.yaml's recipe keys are not "
                "the base's); stopped",
                cand.name,
                replaced,
            )
            return None
        note_start(cand.folder)
        score_new(cand, failed, finished=False)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the sweep file (YAML)")
    parser.add_argument("--out", required=True, help="the sweep's folder (OUT/NAME per candidate)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these candidates alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    try:
        sweep = load_sweep(args.sweep)
        names = chosen(sweep, args.only)
        check_inputs(sweep)
        for name in names:
            check_folder(out, sweep, name)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env, threads = thread_env()
    ok = True
    for name in names:
        lay_out(out, sweep, name)
        ok = run_candidate(Candidate(name, sweep, out, env, threads)) and ok
    write_table(out)
    logger.info("results: %s", out / "results.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
