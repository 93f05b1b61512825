"""Where and in what precision a run trains: the processes Accelerate joins, the precision
`auto` resolves to, and the seeds."""

from __future__ import annotations

import os

import torch
from accelerate.utils import set_seed


def resolve_mixed_precision(setting: str) -> str:
    """ "auto" -> the precision `accelerate launch` names (its config's `mixed_precision` or
    `--mixed_precision`) when it is bf16 or fp16, else "bf16" on CUDA and "no" (fp32) on the
    CPU; other values pass through checked."""
    where = f"train.mixed_precision={setting!r}"
    if setting == "auto":
        launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # "no" unless named
        if launched in ("bf16", "fp16"):
            setting, where = launched, f"accelerate launch's mixed_precision={launched!r}"
        else:
            return "bf16" if torch.cuda.is_available() else "no"
    if setting not in ("no", "bf16", "fp16"):
        raise ValueError(f"{where}: use 'auto', 'no', 'bf16' or 'fp16'")
    if setting == "fp16" and not torch.cuda.is_available():
        # Accelerate would quietly train in fp32 here: no fp16 autocast, no gradient scaler
        raise ValueError(
            f"{where} needs a CUDA GPU (its gradient scaler is a CUDA feature in "
            "Accelerate); on the CPU use 'bf16' or 'no'"
        )
    return setting


def cpu_processes() -> bool:
    """Several processes (`accelerate launch --multi_gpu`, torchrun, mpirun) and no CUDA: join
    them over gloo on the CPU (Accelerate only does so when told it is on the CPU)."""
    world = max(int(os.environ.get(k, "1")) for k in ("WORLD_SIZE", "PMI_SIZE"))
    return world > 1 and not torch.cuda.is_available()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) before a model is built."""
    set_seed(seed)
