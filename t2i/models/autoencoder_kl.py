"""The KL autoencoder of latent diffusion: images <-> a small grid of continuous latents.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", section 3
and appendix G ("KL-f4"): a convolutional encoder gives a diagonal Gaussian over a latent
grid (`latent_channels` x H/f x W/f), the decoder maps a sample back to pixels, and a small KL
weight to N(0, I) keeps the latent space smooth without the blur of a full VAE. The network
is diffusers' `AutoencoderKL`. The denoiser works on the latents scaled to unit variance:
`scaling_factor` = 1 / (the data's latent standard deviation), estimated during training
(a running mean over the batches' posterior means) and written into the config when the
model is saved, as diffusers' `AutoencoderKL.config.scaling_factor` holds it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.adversarial import AdversarialMixin
from t2i.models.base import T2IModel
from t2i.nn.metrics import psnr

STD_MOMENTUM = 0.99  # the running latent standard deviation's momentum per training batch


class LatentAutoencoder(T2IModel, abc.ABC):
    """What the latent diffusion route reads an autoencoder by: `encode` (images -> latents
    scaled to about unit variance), `decode` (back), `latent_channels` and `latent_size`.
    The KL autoencoder below, or a VQ-VAE's pre-quantisation latents (`VQLatents`)."""

    @property
    def image_size(self) -> int:
        """Side of the square images it encodes, in pixels."""
        return self.config.image_size

    @property
    @abc.abstractmethod
    def latent_channels(self) -> int:
        """Channels of the latent grid."""

    @property
    @abc.abstractmethod
    def latent_size(self) -> int:
        """Side of the latent grid."""

    @abc.abstractmethod
    def encode(self, pixel_values: Tensor) -> Tensor:
        """Scaled latents (N, latent_channels, h, w) of images (N, 3, H, W) in [-1, 1]."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Images (N, 3, H, W) in about [-1, 1] from scaled latents."""

    @torch.no_grad()
    def reconstruct(self, pixel_values: Tensor) -> Tensor:
        """decode(encode(x))."""
        return self.decode(self.encode(pixel_values))

    def _track_latent_std(self) -> None:
        """Keep a running (exponential) mean of the training batches' latent std, and its
        count; `config.scaling_factor` None reads it (call from `__init__`)."""
        self.register_buffer("latent_std_ema", torch.zeros(()))
        self.register_buffer("latent_std_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update_latent_std(self, latents: Tensor) -> None:
        """One training batch's unscaled latents into the running std."""
        if self.training:
            std = latents.float().std()
            self.latent_std_ema.mul_(STD_MOMENTUM).add_((1 - STD_MOMENTUM) * std)
            self.latent_std_updates.add_(1)

    @property
    def latent_std(self) -> Tensor:
        """The running estimate of the data's latent std, bias-corrected (1 before any)."""
        k = int(self.latent_std_updates)
        if k == 0:
            return torch.ones(())
        return self.latent_std_ema / (1 - STD_MOMENTUM**k)

    @property
    def scaling_factor(self) -> float:
        """What latents are multiplied by for the denoiser (unit variance on the data)."""
        if self.config.scaling_factor is not None:
            return float(self.config.scaling_factor)
        return float(1.0 / self.latent_std.clamp(min=1e-6))

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Fix the scaling factor in the config (from the running estimate, unless it is
        set), then save as any diffusers model."""
        if self.config.scaling_factor is None:
            self.register_to_config(scaling_factor=self.scaling_factor)
        super().save_pretrained(save_directory, **kwargs)


class KLAutoencoder(AdversarialMixin, LatentAutoencoder):
    """A KL-regularised convolutional autoencoder over images (diffusers' `AutoencoderKL`),
    optionally with VQGAN's adversarial term, as Rombach et al. train theirs.

    Args:
        image_size: side of the square images, in pixels.
        latent_channels: channels of the latent grid.
        block_out_channels: encoder channels per resolution; the grid side is image_size /
            2 ** (levels - 1).
        layers_per_block: residual blocks per resolution.
        norm_num_groups: GroupNorm groups (divides every channel count).
        kl_weight: weight of the KL term per latent value against the reconstruction's
            mean squared error per pixel value.
        scaling_factor: latents are multiplied by it for the denoiser (None: from the
            running estimate, fixed in the config at save time).
        disc_weight, disc_start, disc_layers, disc_channels: the adversarial term
            (`t2i.models.adversarial`; off at disc_weight 0): its weight, the training
            batches before it starts, and the PatchGAN discriminator's stride-2 layers and
            first width.
    """

    READS = frozenset({"pixel_values"})

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        latent_channels: int = 4,
        block_out_channels: Sequence[int] = (64, 128, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        kl_weight: float = 1e-6,
        scaling_factor: float | None = None,
        disc_weight: float = 0.0,  # times eq. 7's adaptive lambda; 0 = no discriminator
        disc_start: int = 0,  # training batches of reconstruction alone before it starts
        disc_layers: int = 3,  # stride-2 layers: 3 sees 70-px patches, 2 sees 34-px ones
        disc_channels: int = 64,  # width of its first layer (doubling per layer, up to 8x)
    ) -> None:
        super().__init__()
        levels = len(block_out_channels)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size={image_size} must halve {levels - 1} times")
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=image_size,
        )
        self._track_latent_std()  # of the posterior means
        self._init_adversarial()

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def latent_size(self) -> int:
        return self.config.image_size // 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def decoder_last_layer(self) -> Tensor:
        return self.vae.decoder.conv_out.weight

    def encode(self, pixel_values: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents of images: the posterior mean (or, with a generator, a sample).

        Args:
            pixel_values: (N, 3, H, W) in [-1, 1].
            generator: draw from the posterior with it (None: its mean).

        Returns:
            (N, latent_channels, h, w).
        """
        posterior = self.vae.encode(pixel_values).latent_dist
        z = posterior.mean if generator is None else posterior.sample(generator)
        return z * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Images (N, 3, H, W) in about [-1, 1] from scaled latents."""
        return self.vae.decode(latents / self.scaling_factor).sample

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Reconstruction MSE of a posterior sample plus `kl_weight` x KL per latent value
        (the negative ELBO with a Gaussian decoder, up to constants and weighting), plus the
        adversarial terms when on (`adversarial_losses`).

        Args:
            batch: a dict with `pixel_values` (B, 3, H, W) in [-1, 1].
        """
        x = batch["pixel_values"]
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon.float(), x.float())
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent value
        self._update_latent_std(posterior.mean)
        adversarial = self.adversarial_losses(x, recon, mse)  # {} when off or not started
        return {
            "loss": mse + self.config.kl_weight * kl + adversarial.pop("loss", 0.0),
            "mse": mse.detach(),
            "kl": kl.detach(),
            "psnr": psnr(recon.detach().clamp(-1, 1), x).mean(),
            "latent_std": self.latent_std.detach().to(mse.device),
            **adversarial,
        }

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Inputs and their reconstructions, for the trainer's grids."""
        x = batch["pixel_values"]
        return {"inputs": x, "reconstructions": self.reconstruct(x)}
