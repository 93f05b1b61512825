"""The sampling loop shared by t2i's diffusion models: diffusers' schedulers, guided in one
batched pass (classifier-free guidance: conditional rows, then null rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

SAMPLERS = {  # diffusers' schedulers by the names configs and command lines use
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,  # DPM-Solver++ (multistep)
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


MULTISTEP = ("dpm", "unipc")  # solvers stepping on the gaps between timesteps


def check_sampler(sampler: str) -> None:
    """A clear error for a sampler name t2i does not know."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: use one of {tuple(SAMPLERS)}")


def guided_denoise(
    predict: Callable[[Tensor, Tensor], Tensor],
    scheduler_config: dict,
    shape: tuple[int, ...],
    guidance_scale: float,
    num_inference_steps: int,
    sampler: str,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    init: Tensor | None = None,
    strength: float = 1.0,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Noise (float32, from `generator`) -> a clean sample of `shape` in `num_inference_steps`.

    Args:
        predict: (inputs, timesteps) -> the model's prediction (whatever the scheduler's
            `prediction_type` says). With guidance, inputs are [x; x] and the first half of
            the prediction must be conditional, the second half unconditional; they are mixed
            as u + s (c - u), so s = 1 is the conditional prediction.
        scheduler_config: the training scheduler's config (its noise schedule and prediction).
        shape: the sample's shape, (B, ...).
        guidance_scale: classifier-free guidance s; 1 runs the conditional rows alone.
        num_inference_steps: denoising steps.
        sampler: a key of `SAMPLERS`: "ddim" (eta 0: deterministic given the first noise),
            "dpm" (DPM-Solver++), "euler" or "unipc".
        generator: the source of the starting noise (one per row, or one for all).
        device: where the sample lives.
        init: start from this clean sample noised to `strength` (SDEdit, Meng et al. 2022)
            instead of from pure noise; None: pure noise.
        strength: the share of the schedule `init` is noised to and denoised from (0: init
            as it is, 1: the full schedule).
        callback: called as f(step, timestep, x) after each step; what it returns (None:
            nothing) replaces x.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength} must be in [0, 1]")
    scheduler = stepped_scheduler(sampler, scheduler_config, num_inference_steps, device)
    guided = guidance_scale != 1.0
    timesteps = scheduler.timesteps
    x = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    if init is None:
        x = x * scheduler.init_noise_sigma
    else:
        skip = min(int(round(num_inference_steps * (1.0 - strength))), num_inference_steps)
        timesteps = timesteps[skip * scheduler.order :]
        if len(timesteps) == 0:
            return init.float()
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skip * scheduler.order)
        x = scheduler.add_noise(init.float(), x, timesteps[:1].repeat(shape[0]))
    for i, t in enumerate(timesteps):
        inp = torch.cat([x, x]) if guided else x
        inp = scheduler.scale_model_input(inp, t)
        steps = torch.full((inp.shape[0],), int(t), device=device, dtype=torch.long)
        pred = predict(inp, steps).float()
        if guided:
            cond, uncond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        x = scheduler.step(pred, t, x).prev_sample
        if callback is not None:  # it may hand back other latents, as diffusers' callbacks do
            changed = callback(i, t, x)
            x = x if changed is None else changed.to(device, torch.float32)
    if not torch.isfinite(x).all():  # never an image of NaNs without a word
        raise ValueError(
            f"sampler={sampler!r} with num_inference_steps={num_inference_steps} and "
            f"guidance_scale={guidance_scale} gave non-finite values; use fewer steps, another "
            "sampler, or float32 weights"
        )
    return x


class TimestepsError(ValueError):
    """Steps a multistep solver would land twice on one timestep of (`check_timesteps`)."""


def stepped_scheduler(
    sampler: str, scheduler_config: Any, num_inference_steps: int, device: Any = None
) -> Any:
    """The sampler's diffusers scheduler over the training schedule, its timesteps set for
    `num_inference_steps` and checked (`check_timesteps`: a TimestepsError) before any step
    is taken."""
    check_sampler(sampler)
    scheduler = SAMPLERS[sampler].from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    steps, train_steps = num_inference_steps, scheduler.config.num_train_timesteps
    check_timesteps(scheduler.timesteps, sampler, steps, train_steps)
    return scheduler


def check_timesteps(timesteps: Tensor, sampler: str, steps: int, train_steps: int) -> None:
    """A ValueError when a multistep solver's timesteps repeat one: diffusers' spacing rounds
    two steps onto one timestep when the steps come near the training schedule's, and DPM-
    Solver++ and UniPC then divide by a zero step (an image of NaNs)."""
    if sampler not in MULTISTEP:
        return
    values = timesteps.tolist()
    if len(set(values)) < len(values):
        twice = next(v for i, v in enumerate(values) if v in values[:i])
        raise TimestepsError(
            f"num_inference_steps={steps} with sampler={sampler!r} lands two steps on timestep "
            f"{twice} of the {train_steps}-step schedule, where that solver divides by zero; "
            f"use fewer steps (under {train_steps}) or sampler 'ddim' or 'euler'"
        )
