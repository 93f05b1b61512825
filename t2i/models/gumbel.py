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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.models.vae import gaussian_log_likelihood
from t2i.nn import VectorDecoder, VectorEncoder


def _gumbel_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Gumbel noise g = -log(-log U), fp32, shaped like `like`; U kept off 0 and 1."""
    finfo = torch.finfo(torch.float32)
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    return -torch.log(-torch.log(u.clamp(finfo.tiny, 1.0 - finfo.eps)))


def gumbel_softmax(
    logits: Tensor,
    tau: float | Tensor,
    hard: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A Gumbel-softmax sample over the last dimension (Jang et al. 2017, eq. 2), in fp32.

    Args:
        logits: unnormalised log-probabilities (..., K).
        tau: temperature > 0; a float or a scalar tensor.
        hard: return the one-hot of the argmax in the forward pass, with the soft sample's
            gradient (straight-through: y_hard - y_soft.detach() + y_soft).
        generator: source of the Gumbel noise.

    Returns:
        (..., K) points on the simplex (one-hot if `hard`).
    """
    y_soft = ((logits.float() + _gumbel_noise(logits, generator)) / tau).softmax(-1)
    if not hard:
        return y_soft
    index = y_soft.argmax(-1)
    y_hard = F.one_hot(index, y_soft.shape[-1]).to(y_soft.dtype)
    return y_hard - y_soft.detach() + y_soft


def gumbel_max(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exact draws from Categorical(softmax(logits)) by the Gumbel-max trick.

    Args:
        logits: unnormalised log-probabilities (..., K).
        generator: source of the Gumbel noise.

    Returns:
        (...,) class indices, int64.
    """
    return (logits.float() + _gumbel_noise(logits, generator)).argmax(-1)


class TemperatureSchedule:
    """tau(step) = max(tau_min, tau0 * exp(-rate * step)) (Jang et al. 2017, section 4).

    Args:
        tau0: temperature at step 0.
        tau_min: floor the temperature decays to.
        rate: decay rate per step.
    """

    def __init__(self, tau0: float, tau_min: float, rate: float) -> None:
        self.tau0, self.tau_min, self.rate = tau0, tau_min, rate

    def __call__(self, step: int | Tensor) -> Tensor:
        step = torch.as_tensor(step, dtype=torch.float32)
        return (self.tau0 * torch.exp(-self.rate * step)).clamp(min=self.tau_min)


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


def categorical_kl_uniform(logits: Tensor) -> Tensor:
    """KL(Categorical(softmax(logits)) || uniform over K) = sum_k q_k (log q_k + log K).

    Args:
        logits: (..., K).

    Returns:
        (...,) nats.
    """
    log_q = logits.float().log_softmax(-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(-1)


def code_perplexity(probs: Tensor) -> Tensor:
    """exp(entropy) of the batch-averaged class probabilities, averaged over variables.

    Args:
        probs: (N, L, K) class probabilities.

    Returns:
        a scalar in [1, K].
    """
    avg = probs.float().mean(0)  # (L, K)
    entropy = -(avg * avg.clamp(min=1e-10).log()).sum(-1)  # (L,)
    return entropy.exp().mean()
