"""What a run folder (`train.output_dir`) holds, and the checks that keep a run from being
lost: a used folder is not trained into afresh, and a run is not resumed under another
config. Torch-free, so the training command line checks them before its heavy imports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from t2i.config import ConfigError, ExperimentConfig, read_yaml, to_dict

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # the loop's step, counters and EMA settings
RUN_PARTS = ("config.yaml", "logs", "samples", "checkpoints", "model", "validation.json")

# train keys a resumed run may change (how long it runs, how it logs); any other key of the
# config the run recorded must stay as it was, or the run would resume as another model
RESUMABLE = frozenset({"data.num_workers"}) | frozenset(
    f"train.{k}"
    for k in (
        "max_steps",
        "resume",
        "output_dir",
        "log_every",
        "sample_every",
        "num_samples",
        "checkpoint_every",
        "checkpoints_total_limit",
    )
)


def checkpoints_root(output_dir: str | Path) -> Path:
    """The folder that holds a run's checkpoints."""
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_root(output_dir)
    found = (
        [p for p in root.glob(PREFIX + "*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    )
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def check_fresh(config: ExperimentConfig, where: str) -> None:
    """A ConfigError when `train.output_dir` already holds a run and `train.resume` is unset:
    training afresh there would overwrite its checkpoints, logs and model. Only what a run
    writes after its first steps counts (not the folders every process of a distributed
    launch makes at its start), so the processes of one launch never see each other's."""
    out = Path(config.train.output_dir)
    if config.train.resume is not None or not out.is_dir():
        return
    written = (out / "model", out / "logs" / "metrics.csv")
    held = list_checkpoints(out) or [p for p in written if p.exists()]
    if held:
        raise ConfigError(
            f"{where}: train.output_dir={str(out)!r} already holds a run ({held[-1].name}); "
            "continue it with --resume latest, or choose another train.output_dir"
        )


def check_resume(config: ExperimentConfig, where: str) -> None:
    """A ConfigError when `train.resume` continues a run that was trained with another config
    (a key other than those of RESUMABLE changed), naming the first such key."""
    resume = config.train.resume
    if resume not in (None, "latest") and not (Path(resume) / STATE_FILE).is_file():
        raise ConfigError(
            f"{where}: train.resume={resume!r}: no complete checkpoint there (missing "
            f"{STATE_FILE}); use 'latest' or a checkpoint-N folder"
        )
    recorded = Path(config.train.output_dir) / "config.yaml"
    if resume is None or not recorded.is_file():
        return
    old = flatten(read_yaml(recorded))
    new = flatten(to_dict(config))
    changed = [k for k in new if k in old and k not in RESUMABLE and old[k] != new[k]]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{where}: train.resume={config.train.resume}: {recorded.parent} was trained with "
            f"{key}={old[key]!r}, not {new[key]!r}; resume it with its own config "
            f"({recorded}), or choose another train.output_dir"
        )


def flatten(tree: dict) -> dict[str, Any]:
    """{"model": {"dim": 8}} -> {"model.dim": 8} (one level: a section's keys); a top-level
    value keeps its name."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def check_overwrite(config: ExperimentConfig, where: str) -> None:
    """A ConfigError when `--overwrite` (start afresh) comes with `train.resume`."""
    if config.train.resume is not None:
        raise ConfigError(f"{where}: --overwrite starts afresh; it cannot go with train.resume")


def clear_run(config: ExperimentConfig, where: str) -> None:
    """`--overwrite`: remove the run `train.output_dir` holds (what a run writes: RUN_PARTS),
    leaving anything else in the folder; on the first process of a launch only."""
    check_overwrite(config, where)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out = Path(config.train.output_dir)
    for name in RUN_PARTS:
        part = out / name
        if part.is_dir():
            shutil.rmtree(part)
        elif part.exists():
            part.unlink()
