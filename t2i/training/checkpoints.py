"""Resumable checkpoints: Accelerate's `save_state` written atomically, plus the loop's own state.

A checkpoint is `OUTPUT_DIR/checkpoints/checkpoint-NNNNNNN/`; it is written under a temporary
name and renamed when complete, so a run killed mid-write never leaves a half checkpoint that
`--resume latest` would pick up. Model weights are safetensors (Accelerate's default); the
EMA weights are written as `ema.safetensors` beside them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from t2i.runs import PREFIX, STATE_FILE, checkpoints_root, list_checkpoints

EMA_FILE = "ema.safetensors"

logger = logging.getLogger(__name__)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: None, "latest" (None if the run has none yet), or a path.

    Args:
        output_dir: the run directory searched for "latest".
        resume: the `train.resume` setting.
    """
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.info("resume=latest: no checkpoint in %s yet; starting fresh", output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"train.resume={resume!r}: no complete checkpoint there "
            f"(missing {STATE_FILE}); use 'latest' or a checkpoint-N folder"
        )
    return path


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file and rename it into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    step: int,
    state: dict,
    ema_tensors: dict[str, torch.Tensor] | None = None,
    total_limit: int | None = None,
) -> Path:
    """Save model, optimizer, scheduler and RNG states plus `state`; return the folder.

    Args:
        accelerator: the run's Accelerator (every process must call this).
        output_dir: the run directory.
        step: the optimizer update count, used in the folder name.
        state: JSON-serialisable loop state (step, skipped-step counters, EMA settings).
        ema_tensors: EMA weights by parameter name, or None.
        total_limit: keep only the newest this many checkpoints.
    """
    final = checkpoints_root(output_dir) / f"{PREFIX}{step:07d}"
    if (final / STATE_FILE).is_file():
        return final
    tmp = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ema_tensors is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in ema_tensors.items()},
                str(tmp / EMA_FILE),
            )
        _write_json_atomic(tmp / STATE_FILE, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _prune(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def _prune(output_dir: str | Path, total_limit: int | None) -> None:
    """Delete all but the newest `total_limit` checkpoints."""
    if total_limit is None or total_limit <= 0:
        return
    for old in list_checkpoints(output_dir)[:-total_limit]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    accelerator: Accelerator, path: Path
) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """Restore what `save_checkpoint` wrote; return the loop state and the EMA weights (or None)."""
    accelerator.load_state(str(path))
    state = json.loads((path / STATE_FILE).read_text())
    ema_path = path / EMA_FILE
    return state, (load_file(str(ema_path)) if ema_path.is_file() else None)
