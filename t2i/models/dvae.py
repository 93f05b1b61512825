"""The DALL-E discrete VAE: a ResNet encoder to logits over a codebook, Gumbel-softmax
relaxed codes, a ResNet decoder.

Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation", section 2.1 and appendix A: the
encoder gives, at each cell of an (H/f) x (W/f) grid, logits over K codes; training decodes
the Gumbel-softmax relaxation (Jang et al. 2017) of those categoricals, with the temperature
annealed towards a floor, and maximises the ELBO with the KL to the uniform prior weighted
by beta, ramped up from 0 over the first updates. `encode` takes the argmax code per cell.

Here the likelihood is the Gaussian with fixed `sigma_dec` of `t2i.models.vae` (DALL-E used a
logit-Laplace), so the loss is a beta-weighted negative ELBO in nats per pixel dimension.
The training-step count is a buffer: temperature and KL weight are saved with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from einops import einsum, rearrange
from torch import Tensor, nn

from t2i.models.tokenizer import ImageTokenizer
from t2i.nn import Decoder, Encoder, code_statistics, downsampled_size
from t2i.nn.distributions import (
    TemperatureSchedule,
    categorical_kl_uniform,
    gaussian_log_likelihood,
    gumbel_softmax,
)
from t2i.nn.metrics import psnr


class DiscreteVAE(ImageTokenizer):
    """The DALL-E dVAE tokenizer.

    Args:
        image_size: image side in pixels; divisible by 2**len(channels).
        in_channels: image channels.
        channels: encoder stage widths, each halving the resolution: 1, 2 or 3 stages give
            downsampling 2, 4 or 8.
        num_res_blocks: ResBlocks per stage.
        num_tokens: codebook size K (DALL-E: 8192).
        codebook_dim: size of a code vector fed to the decoder.
        sigma_dec: fixed std of the Gaussian likelihood, on the [-1, 1] scale.
        tau0: Gumbel-softmax temperature at step 0.
        tau_min: temperature floor (DALL-E anneals to 1/16).
        anneal_rate: tau = max(tau_min, tau0 * exp(-anneal_rate * step)).
        kl_weight: beta, the KL weight reached at the end of the ramp.
        kl_warmup_steps: updates over which beta rises linearly from 0.
        straight_through: decode hard one-hot codes with the soft sample's gradient.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128),
        num_res_blocks: int = 2,
        num_tokens: int = 512,
        codebook_dim: int = 64,
        sigma_dec: float = 0.1,
        tau0: float = 1.0,
        tau_min: float = 1.0 / 16,
        anneal_rate: float = 1e-3,
        kl_weight: float = 1.0,
        kl_warmup_steps: int = 500,
        straight_through: bool = False,
    ) -> None:
        super().__init__()
        self._grid = downsampled_size(image_size, len(channels))
        self.encoder = Encoder(in_channels, channels, num_tokens, num_res_blocks)
        self.codebook = nn.Embedding(num_tokens, codebook_dim)
        self.decoder = Decoder(codebook_dim, channels, in_channels, num_res_blocks)
        self.schedule = TemperatureSchedule(tau0, tau_min, anneal_rate)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))  # training updates

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def grid_size(self) -> int:
        return self._grid

    @property
    def tau(self) -> Tensor:
        """The current Gumbel-softmax temperature, a scalar tensor."""
        return self.schedule(self.step.float())

    @property
    def beta(self) -> Tensor:
        """The current KL weight: kl_weight * min(1, step / kl_warmup_steps)."""
        ramp = (self.step.float() / max(self.config.kl_warmup_steps, 1)).clamp(max=1.0)
        return self.config.kl_weight * ramp

    def logits(self, pixel_values: Tensor) -> Tensor:
        """Code logits per grid cell, (N, h, w, K), in fp32.

        Args:
            pixel_values: (N, C, H, W) in [-1, 1].
        """
        return rearrange(self.encoder(pixel_values).float(), "n k h w -> n h w k")

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Decoder mean for one-hot or relaxed codes (N, h, w, K): (N, C, H, W), unclamped."""
        z = einsum(
            codes.to(self.codebook.weight.dtype), self.codebook.weight, "n h w k, k d -> n d h w"
        )
        return self.decoder(z)

    def encode(self, pixel_values: Tensor) -> Tensor:
        """Code indices (N, h, w): the argmax of the logits. See `ImageTokenizer.encode`."""
        return self.logits(pixel_values).argmax(-1)

    def decode(self, tokens: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1]. See `ImageTokenizer.decode`."""
        return self.decode_codes(F.one_hot(tokens.long(), self.num_tokens)).clamp(-1, 1)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The beta-weighted negative ELBO per pixel dimension; advances the schedules.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].

        Returns:
            "loss", "recon" (Gaussian NLL, nats / image), "kl" (to the uniform prior, nats /
            image), "elbo_nats", "mse", "psnr", "tau", "beta", "perplexity" and "usage" of the
            argmax codes.
        """
        x = batch["pixel_values"]
        tau, beta = self.tau.to(x.device), self.beta.to(x.device)
        if self.training:
            self.step += 1
        logits = self.logits(x)  # (N, h, w, K)
        codes = gumbel_softmax(logits, tau, hard=self.config.straight_through)
        recon = self.decode_codes(codes).float()  # (N, C, H, W)
        nll = -gaussian_log_likelihood(x.float(), recon, self.config.sigma_dec)  # (N,)
        kl = categorical_kl_uniform(logits).flatten(1).sum(1)  # (N,)
        perplexity, usage = code_statistics(logits.detach().argmax(-1), self.num_tokens)
        return {
            "loss": (nll + beta * kl).mean() / x[0].numel(),
            "recon": nll.mean(),
            "kl": kl.mean(),
            "elbo_nats": -(nll + kl).mean(),
            "mse": F.mse_loss(recon.detach(), x.float()),
            "psnr": psnr(recon.detach().clamp(-1, 1), x).mean(),
            "tau": tau,
            "beta": beta,
            "perplexity": perplexity,
            "usage": usage,
        }
