"""The sampling loop shared by t2i's diffusion models: diffusers' schedulers, guided in one
batched pass (classifier-free guidance: conditional rows, then null rows)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


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
    generator: torch.Generator | None,
    device: torch.device,
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
        sampler: "ddim" (eta 0: deterministic given the first noise) or "dpm" (DPM-Solver++).
        generator: the source of the starting noise.
        device: where the sample lives.
    """
    check_sampler(sampler)
    scheduler = SAMPLERS[sampler].from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    guided = guidance_scale != 1.0
    x = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = torch.cat([x, x]) if guided else x
        steps = torch.full((inp.shape[0],), int(t), device=device, dtype=torch.long)
        pred = predict(inp, steps).float()
        if guided:
            cond, uncond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        x = scheduler.step(pred, t, x).prev_sample
    return x
