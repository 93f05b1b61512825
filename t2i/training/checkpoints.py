"""Resumable checkpoints: Accelerate's `save_state` written atomically, plus the loop's own state.

A checkpoint is `OUTPUT_DIR/checkpoints/checkpoint-NNNNNNN/`; it is written under a temporary
name and renamed when complete, so a run killed mid-write never leaves a half checkpoint that
`--resume latest` would pick up. Model weights are safetensors (Accelerate's default); the
EMA weights are written as `ema.safetensors` beside them. Last, `manifest.json` lists every
file with its size and sha256: a checkpoint is whole only when each listed file is there
with those bytes, and `--resume latest` passes over damaged ones (a disk filled up, a file
truncated or deleted since) to the newest whole one, saying which it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from t2i.runs import PREFIX, STATE_FILE, checkpoints_root, list_checkpoints

EMA_FILE = "ema.safetensors"
MANIFEST = "manifest.json"  # written last: the files of a whole checkpoint

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
            return None
        skipped = []
        for path in reversed(found):
            reason = damage(path)
            if reason is None:
                return path
            logger.warning("resume=latest: skipping %s: %s", path.name, reason)
            skipped.append(f"{path.name} ({reason})")
        raise FileNotFoundError(
            f"train.resume=latest: every checkpoint in {checkpoints_root(output_dir)} is "
            f"damaged: {'; '.join(skipped)}"
        )
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"train.resume={resume!r}: no complete checkpoint there "
            f"(missing {STATE_FILE}); use 'latest' or a checkpoint-N folder"
        )
    reason = damage(path)
    if reason is not None:
        raise FileNotFoundError(f"train.resume={resume!r}: a damaged checkpoint: {reason}")
    return path


def damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint (None: it is whole): a file its manifest lists that is
    missing, of another size or other bytes; without a manifest (written before t2i kept
    one), an unreadable state file or safetensors file."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return _legacy_damage(folder)
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return f"its {MANIFEST} is unreadable"
    for name, entry in listed.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != entry["bytes"]:
            return f"{name} is {size} bytes, {entry['bytes']} when written (truncated?)"
        if _sha256(file) != entry["sha256"]:
            return f"{name} holds other bytes than were written"
    return None


def _legacy_damage(folder: Path) -> str | None:
    try:
        json.loads((folder / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return f"{STATE_FILE} is unreadable"
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as f:
                list(f.keys())
        except Exception as err:  # safetensors raises its own error types
            return f"{file.name} is unreadable ({type(err).__name__})"
    return None


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of a checkpoint with its size and sha256, atomically, last."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    listed = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files
    }
    _write_json_atomic(folder / MANIFEST, {"files": listed})


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
    accelerator.wait_for_everyone()  # every process's files are in before the manifest
    if accelerator.is_main_process:
        if ema_tensors is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in ema_tensors.items()},
                str(tmp / EMA_FILE),
            )
        _write_json_atomic(tmp / STATE_FILE, state)
        write_manifest(tmp)
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
