"""Gumbel-softmax (the Concrete distribution) and a VAE with categorical latents.

- Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax": the relaxed
  sample y = softmax((logits + g) / tau) (eq. 2), the straight-through hard variant, and the
  temperature schedule tau = max(tau_min, tau0 * exp(-r * t)).
- Maddison, Mnih & Teh 2017, "The Concrete Distribution": the same relaxation.
- Gumbel 1954 / the Gumbel-max trick: argmax(logits + g) with g = -log(-log U) is an exact draw
  from Categorical(softmax(logits)).

`CategoricalVAE` keeps its training-step count in a buffer, so the annealed temperature is
saved and loaded with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.nn import VectorDecoder, VectorEncoder
from t2i.nn.distributions import (
    TemperatureSchedule,
    categorical_kl_uniform,
    code_perplexity,
    gaussian_log_likelihood,
    gumbel_max,
    gumbel_softmax,
)


class CategoricalVAE(T2IModel):
    """A VAE whose latent is `num_latents` categorical variables of `num_classes` classes each.

    Training decodes Gumbel-softmax relaxed one-hots at an annealed temperature; the prior is
    uniform, and KL(q || uniform) = sum_k q_k log(q_k * K) per variable, in closed form.

    Args:
        image_size: image side in pixels; divisible by 2**len(channels).
        in_channels: image channels.
        num_latents: number of categorical variables.
        num_classes: classes per variable (K).
        channels: encoder stage widths (each halves the resolution); the decoder mirrors it.
        sigma_dec: fixed std of the Gaussian likelihood p(x|z), on the [-1, 1] scale.
        tau0: Gumbel-softmax temperature at step 0.
        tau_min: temperature floor.
        anneal_rate: tau = max(tau_min, tau0 * exp(-anneal_rate * step)).
        hard: decode straight-through one-hot samples during training.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        num_latents: int = 32,
        num_classes: int = 16,
        channels: Sequence[int] = (32, 64, 128),
        sigma_dec: float = 0.1,
        tau0: float = 1.0,
        tau_min: float = 0.5,
        anneal_rate: float = 1e-4,
        hard: bool = False,
    ) -> None:
        super().__init__()
        codes = num_latents * num_classes
        self.encoder = VectorEncoder(image_size, in_channels, channels, codes)
        self.decoder = VectorDecoder(image_size, codes, channels, in_channels)
        self.schedule = TemperatureSchedule(tau0, tau_min, anneal_rate)
        # training_losses calls in train mode (micro-batches); saved with the weights
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    @property
    def tau(self) -> Tensor:
        """The current temperature, a scalar tensor."""
        return self.schedule(self.step.float())

    def encode(self, x: Tensor) -> Tensor:
        """Logits of q(z|x), (N, num_latents, num_classes), in fp32.

        Args:
            x: images (N, C, H, W) in [-1, 1].
        """
        logits = self.encoder(x).float()  # (N, L * K)
        return logits.unflatten(1, (self.config.num_latents, self.config.num_classes))

    def decode(self, y: Tensor) -> Tensor:
        """The mean of p(x|z) for (relaxed) one-hots y, (N, C, H, W) (unclamped).

        Args:
            y: one-hots or simplex points (N, num_latents, num_classes).
        """
        return self.decoder(y.flatten(1).to(self.dtype))

    def kl_per_dim(self, x: Tensor) -> Tensor:
        """KL(q(z|x) || uniform) of each categorical variable, (N, num_latents) nats.

        Args:
            x: images (N, C, H, W) in [-1, 1].
        """
        return categorical_kl_uniform(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n codes drawn from the uniform prior: (n, C, H, W) in [-1, 1].

        Args:
            n: number of images.
            generator: source of the codes.
        """
        logits = torch.zeros(
            n, self.config.num_latents, self.config.num_classes, device=self.device
        )
        codes = gumbel_max(logits, generator)  # (n, L)
        return self.decode(F.one_hot(codes, self.config.num_classes)).clamp(-1, 1)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Reconstruction of a Gumbel-softmax sample plus KL to the uniform prior, per dimension.

        Advances the temperature schedule by one step when the model is in training mode.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].

        Returns:
            "loss" ((recon + kl) / D, the batch mean), "recon" and "kl" (nats / image), "tau",
            "perplexity" (of the batch-averaged code usage, mean over variables; 1 to K).
        """
        x = batch["pixel_values"]
        tau = self.tau.to(x.device)
        if self.training:
            self.step += 1
        logits = self.encode(x)  # (N, L, K)
        y = gumbel_softmax(logits, tau, hard=self.config.hard)  # (N, L, K)
        recon = -gaussian_log_likelihood(x.float(), self.decode(y).float(), self.config.sigma_dec)
        kl = categorical_kl_uniform(logits).sum(1)  # (N,)
        return {
            "loss": (recon + kl).mean() / x[0].numel(),
            "recon": recon.mean(),
            "kl": kl.mean(),
            "tau": tau,
            "perplexity": code_perplexity(logits.detach().softmax(-1)),
        }

    @torch.no_grad()
    def log_images(
        self, batch: dict, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Image grids for the trainer: inputs, reconstructions (argmax codes), prior samples.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].
            generator: source of the prior samples.
        """
        x = batch["pixel_values"]
        codes = self.encode(x).argmax(-1)  # (N, L)
        return {
            "inputs": x,
            "reconstructions": self.decode(F.one_hot(codes, self.config.num_classes)).clamp(-1, 1),
            "samples": self.sample(x.shape[0], generator),
        }
