"""Where and in what precision a run trains: the processes Accelerate joins, the precision
`auto` resolves to, and the seeds."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, set_seed


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


def wants_fsdp() -> bool:
    """`accelerate launch` was given an FSDP config (or `--use_fsdp`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(accelerator: Accelerator) -> bool:
    """Shard over CPU processes when the launcher asked for FSDP; True when it did so.

    Accelerate turns an FSDP launch on processes without an accelerator into plain data
    parallel (its FSDP branch is only taken for GPUs, NPUs and the like), silently. Its FSDP2
    path itself -- `fully_shard`, the sharded checkpoint, the gathered state dict -- runs on
    CPU processes over gloo; this switches the run's state to it, with the plugin built from
    the launcher's settings, before anything is prepared."""
    if not (wants_fsdp() and cpu_processes()):
        return False
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"fsdp_version={plugin.fsdp_version} (accelerate launch's FSDP config): on CPU "
            "processes t2i shards with FSDP2 only; set fsdp_version: 2"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state = accelerator.state
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) before a model is built."""
    set_seed(seed)
