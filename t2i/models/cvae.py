"""The conditional VAE and the Gaussian stochastic neural network (GSNN), text -> image.

Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep Conditional
Generative Models". With x the caption and y the image:
- recognition network q(z|x, y), conditional prior p(z|x), generation network p(y|x, z);
- L_CVAE = E_q(z|x,y)[-log p(y|x, z)] + KL(q(z|x, y) || p(z|x))     (the negative of eq. 4)
- L_GSNN = E_p(z|x)[-log p(y|x, z)]                                 (the negative of eq. 9)
- L_hybrid = alpha * L_CVAE + (1 - alpha) * L_GSNN                   (the negative of eq. 10)
The GSNN term trains the prior path that `generate` samples from, closing the gap between
training (z from q) and testing (z from p). Gaussian pieces come from `t2i.models.vae`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from t2i.models.base import T2IModel
from t2i.nn import CaptionEncoder, VectorDecoder, VectorEncoder
from t2i.nn.distributions import (
    LOGVAR_RANGE,
    bits_per_dim,
    gaussian_kl_two,
    gaussian_log_likelihood,
    reparameterize,
)
from t2i.nn.text import VOCAB_SIZE

IMAGE_CHANNELS = 3


def _gaussian_head(in_features: int, hidden: int, latent_dim: int) -> nn.Sequential:
    """A 2-layer MLP -> (mu, logvar) of a diagonal Gaussian, concatenated: (B, 2 * latent_dim)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim)
    )


def _split(h: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 2D) -> (mu, logvar), each (B, D) in fp32, logvar clamped."""
    mu, logvar = h.float().chunk(2, dim=1)
    return mu, logvar.clamp(*LOGVAR_RANGE)


class CVAE(T2IModel):
    """A caption-conditioned VAE trained with Sohn et al.'s hybrid CVAE + GSNN objective.

    Args:
        image_size: image side in pixels; divisible by 2**len(channels).
        latent_dim: size of z.
        channels: image encoder stage widths (each halves the resolution); the decoder mirrors it.
        text_width: width of the caption encoder and of the caption vector.
        text_layers: Transformer layers of the caption encoder.
        vocab_size: token vocabulary (open_clip's BPE).
        context_length: longest caption in tokens.
        sigma_dec: fixed std of the Gaussian likelihood p(y|x, z), on the [-1, 1] scale.
        alpha: weight of L_CVAE in the hybrid loss; 1 - alpha weighs L_GSNN.
    """

    READS = frozenset({"pixel_values", "input_ids"})

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        text_width: int = 128,
        text_layers: int = 2,
        vocab_size: int = VOCAB_SIZE,
        context_length: int = 32,
        sigma_dec: float = 0.1,
        alpha: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must lie in [0, 1]")
        self.text_encoder = CaptionEncoder(vocab_size, context_length, text_width, text_layers)
        self.image_encoder = VectorEncoder(image_size, IMAGE_CHANNELS, channels, text_width)
        self.recognition = _gaussian_head(2 * text_width, 2 * text_width, latent_dim)
        self.prior_net = _gaussian_head(text_width, text_width, latent_dim)
        self.decoder = VectorDecoder(image_size, latent_dim + text_width, channels, IMAGE_CHANNELS)

    def encode_text(self, input_ids: Tensor) -> Tensor:
        """Caption vectors c, (B, text_width).

        Args:
            input_ids: open_clip BPE ids (B, L), pad id 0.
        """
        return self.text_encoder(input_ids)

    def prior(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of the conditional prior p(z|x): (mu, logvar), each (B, latent_dim), fp32.

        Args:
            c: caption vectors (B, text_width).
        """
        return _split(self.prior_net(c))

    def posterior(self, pixel_values: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of the recognition network q(z|x, y): (mu, logvar), each (B, latent_dim).

        Args:
            pixel_values: images (B, 3, H, W) in [-1, 1].
            c: caption vectors (B, text_width).
        """
        h = torch.cat([self.image_encoder(pixel_values), c], dim=1)  # (B, 2 * text_width)
        return _split(self.recognition(h))

    def decode(self, z: Tensor, c: Tensor) -> Tensor:
        """The mean of p(y|x, z), (B, 3, H, W) (unclamped).

        Args:
            z: latents (B, latent_dim).
            c: caption vectors (B, text_width).
        """
        return self.decoder(torch.cat([z.to(c.dtype), c], dim=1))  # (B, 3, H, W)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images for captions: z ~ p(z|x), then the decoder mean. (B, 3, H, W) in [-1, 1].

        Args:
            input_ids: open_clip BPE ids (B, L).
            generator: source of z.
        """
        c = self.encode_text(input_ids)
        z = reparameterize(*self.prior(c), generator)
        return self.decode(z, c).clamp(-1, 1)

    def _nll(self, y: Tensor, z: Tensor, c: Tensor) -> Tensor:
        """-log p(y|x, z) per image, (B,), in fp32."""
        return -gaussian_log_likelihood(y.float(), self.decode(z, c).float(), self.config.sigma_dec)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The hybrid loss alpha * L_CVAE + (1 - alpha) * L_GSNN per pixel dimension.

        Args:
            batch: a dict with `pixel_values` (B, 3, H, W) in [-1, 1] and `input_ids` (B, L).

        Returns:
            "loss" (batch mean / D), and in nats per image: "recon" and "kl" (the two parts of
            L_CVAE), "cvae" (L_CVAE = -ELBO), "gsnn" (L_GSNN), "elbo_nats"; and "bpd" of the ELBO.
        """
        y = batch["pixel_values"]
        num_dims = y[0].numel()
        c = self.encode_text(batch["input_ids"])  # (B, W)
        mu_p, logvar_p = self.prior(c)
        mu_q, logvar_q = self.posterior(y, c)
        recon = self._nll(y, reparameterize(mu_q, logvar_q), c)  # (B,)
        kl = gaussian_kl_two(mu_q, logvar_q, mu_p, logvar_p).sum(1)  # (B,)
        gsnn = self._nll(y, reparameterize(mu_p, logvar_p), c)  # (B,)
        cvae = recon + kl
        alpha = self.config.alpha
        return {
            "loss": (alpha * cvae + (1.0 - alpha) * gsnn).mean() / num_dims,
            "recon": recon.mean(),
            "kl": kl.mean(),
            "cvae": cvae.mean(),
            "gsnn": gsnn.mean(),
            "elbo_nats": -cvae.mean(),
            "bpd": bits_per_dim(-cvae, num_dims).mean(),
        }

    @torch.no_grad()
    def log_images(
        self, batch: dict, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Image grids for the trainer: inputs, reconstructions (z = mean of q), samples (z ~ p).

        Args:
            batch: a dict with `pixel_values` (B, 3, H, W) and `input_ids` (B, L).
            generator: source of the prior samples.
        """
        y = batch["pixel_values"]
        c = self.encode_text(batch["input_ids"])
        mu_q, _ = self.posterior(y, c)
        return {
            "inputs": y,
            "reconstructions": self.decode(mu_q, c).clamp(-1, 1),
            "samples": self.generate(batch["input_ids"], generator),
        }
