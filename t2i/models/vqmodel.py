"""A diffusers `VQModel` as an image tokenizer: the VQ autoencoders of latent diffusion
(Rombach et al. 2022, "VQ-f4" / "VQ-f8") and aMUSEd's VQ-GAN are saved in that layout, so a
user's own such folder gives the code routes (DALL-E, unCLIP over codes, masked) their codes.

The encoder's pre-quantisation output is snapped to its nearest codebook entry (van den Oord
et al. 2017, eq. 1); the indices of those entries are the codes a prior models, and decoding
looks them up and runs the decoder. Trained (or fine-tuned) by the VQ-VAE objective: the
reconstruction's squared error plus diffusers' quantizer loss (codebook and beta-weighted
commitment terms, eq. 3).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import VQModel
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.base import plain
from t2i.models.tokenizer import ImageTokenizer


class VQModelTokenizer(ImageTokenizer):
    """A diffusers `VQModel` read as t2i's image tokenizer.

    Args:
        vqmodel: the `VQModel`'s config (a pretrained folder's config.json; None: diffusers'
            defaults).
        image_size: side of the square images it tokenises (the grid side is image_size /
            2 ** (levels - 1)).
    """

    READS = frozenset({"pixel_values"})

    @register_to_config
    def __init__(self, vqmodel: dict[str, Any] | None = None, image_size: int = 32) -> None:
        super().__init__()
        config = {k: v for k, v in (vqmodel or {}).items() if not k.startswith("_")}
        self.vq = VQModel.from_config(config)
        halvings = len(self.vq.config.block_out_channels) - 1
        if image_size % 2**halvings:
            raise ValueError(f"image_size={image_size} must halve {halvings} times")

    @classmethod
    def from_diffusers(cls, path: str, image_size: int) -> VQModelTokenizer:
        """A `VQModel` folder (safetensors weights) as a tokenizer of `image_size` images."""
        given = VQModel.from_pretrained(str(path), use_safetensors=True)
        config = {k: plain(v) for k, v in dict(given.config).items() if not k.startswith("_")}
        model = cls(vqmodel=config, image_size=image_size)
        model.vq.load_state_dict(given.state_dict())
        return model

    @property
    def num_tokens(self) -> int:
        return int(self.vq.config.num_vq_embeddings)

    @property
    def grid_size(self) -> int:
        return self.config.image_size // 2 ** (len(self.vq.config.block_out_channels) - 1)

    def _quantize(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The snapped latents (N, C, g, g), the quantizer's loss, the codes (N, g, g) and the
        perplexity of their use."""
        h = self.vq.encode(pixel_values).latents
        z_q, loss, (_, _, indices) = self.vq.quantize(h)
        use = torch.bincount(indices.flatten(), minlength=self.num_tokens).float()
        use = use / use.sum()
        perplexity = torch.exp(-(use * torch.log(use.clamp(min=1e-10))).sum())
        return z_q, loss, indices.reshape(h.shape[0], h.shape[2], h.shape[3]), perplexity

    @torch.no_grad()
    def encode(self, pixel_values: Tensor) -> Tensor:
        return self._quantize(pixel_values)[2]

    def decode(self, tokens: Tensor) -> Tensor:
        n, g = tokens.shape[0], tokens.shape[-1]
        shape = (n, g, g, self.vq.quantize.vq_embed_dim)
        z_q = self.vq.quantize.get_codebook_entry(tokens.reshape(-1), shape)
        return self.vq.decode(z_q, force_not_quantize=True).sample

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The VQ-VAE objective on a batch of images (`pixel_values`, (B, 3, H, W) in [-1, 1]):
        reconstruction MSE plus the quantizer's codebook and commitment terms."""
        x = batch["pixel_values"]
        z_q, vq_loss, _, perplexity = self._quantize(x)
        recon = self.vq.decode(z_q, force_not_quantize=True).sample
        mse = F.mse_loss(recon.float(), x.float())
        return {
            "loss": mse + vq_loss,
            "recon": mse.detach(),
            "vq": vq_loss.detach(),
            "perplexity": perplexity,
        }
