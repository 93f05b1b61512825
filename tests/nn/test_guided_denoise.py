"""The diffusion sampling loop refuses what would draw an image of NaNs without a word: steps
that land a multistep solver twice on one timestep (refused before any step runs), and a
sample that ends non-finite for any reason."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from t2i.nn.diffusion import guided_denoise

CONFIG = dict(
    DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
    ).config
)


def run(predict, steps: int, sampler: str) -> torch.Tensor:
    return guided_denoise(
        predict,
        CONFIG,
        (1, 4, 4, 4),
        1.0,
        steps,
        sampler,
        torch.Generator().manual_seed(0),
        torch.device("cpu"),
    )


@pytest.mark.parametrize("sampler", ["dpm", "unipc"])
def test_steps_landing_twice_on_a_timestep_are_refused_before_any_step(sampler):
    calls = []

    def predict(x, t):
        calls.append(t)
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match=f"num_inference_steps=1000 with sampler='{sampler}'"):
        run(predict, 1000, sampler)
    assert calls == []  # refused before the model ran
    assert torch.isfinite(run(predict, 999, sampler)).all()  # the most that works


def test_a_non_finite_sample_is_an_error_naming_the_settings():
    def predict(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match="sampler='ddim' with num_inference_steps=5 .* non-finite"):
        run(predict, 5, "ddim")
