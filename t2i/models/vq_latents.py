"""A VQ-VAE's pre-quantisation latents as the latent diffusion route's autoencoder.

Rombach et al. 2022 train their denoisers over two kinds of first stage: a KL-regularised
autoencoder (`KLAutoencoder`) and a VQ-regularised one, whose denoiser works on the encoder's
continuous output before the quantizer, the decoder quantizing what the denoiser draws
("VQ-reg", section 3.1). `VQLatents` is that second kind over t2i's `VQVAE`: `encode` gives
the encoder's features scaled to unit variance, `decode` snaps them to the codebook and
decodes. It trains as the VQ-VAE does (and tracks the latents' std as the KL autoencoder
does), or wraps a trained VQ-VAE with the scaling factor measured on data (`from_vqvae`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.autoencoder_kl import LatentAutoencoder
from t2i.models.vq import VQVAE


class VQLatents(LatentAutoencoder):
    """A VQ-VAE read through its pre-quantisation latents (`embed_dim` x h x w).

    Args:
        vqvae: the VQ-VAE's constructor arguments (`t2i.models.VQVAE`).
        scaling_factor: latents are multiplied by it for the denoiser (None: from the
            running estimate while training, fixed in the config at save time).
    """

    @register_to_config
    def __init__(self, vqvae: dict[str, Any] | None = None, scaling_factor: float | None = None):
        super().__init__()
        self.vq = VQVAE(**(vqvae or {}))
        self._track_latent_std()

    @classmethod
    @torch.no_grad()
    def from_vqvae(cls, vq: VQVAE, batches: Iterable[Tensor]) -> VQLatents:
        """A trained VQ-VAE (its weights copied) with the scaling factor 1 / the std of its
        encoder's output over `batches` of images (N, 3, H, W) in [-1, 1]."""
        feats = torch.cat([vq.encoder(x).flatten() for x in batches])
        arguments = {k: v for k, v in vq.config.items() if not k.startswith(("_", "disc_"))}
        model = cls(vqvae=arguments, scaling_factor=float(1.0 / feats.float().std()))
        keys = model.vq.state_dict().keys()
        weights = {k: v for k, v in vq.state_dict().items() if k in keys}
        model.vq.load_state_dict(weights)  # the autoencoder's; a discriminator is left out
        return model.to(vq.device).eval()

    @property
    def image_size(self) -> int:
        return self.vq.config.image_size

    @property
    def latent_channels(self) -> int:
        return self.vq.config.embed_dim

    @property
    def latent_size(self) -> int:
        return self.vq.grid_size

    def encode(self, pixel_values: Tensor) -> Tensor:
        """Scaled pre-quantisation latents (N, embed_dim, h, w)."""
        return self.vq.encoder(pixel_values) * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [-1, 1]: the latents unscaled, quantized, decoded."""
        quantized = self.vq.quantizer(latents / self.scaling_factor).quantized
        return self.vq.decoder(quantized).clamp(-1, 1)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The VQ-VAE's losses (`VQVAE.training_losses`); the latents' std is tracked."""
        with torch.no_grad():
            self._update_latent_std(self.vq.encoder(batch["pixel_values"]))
        return self.vq.training_losses(batch)

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Inputs and their reconstructions, for the trainer's grids."""
        x = batch["pixel_values"]
        return {"inputs": x, "reconstructions": self.reconstruct(x)}
