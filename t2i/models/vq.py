"""VQ-VAE and VQ-VAE-2 image tokenizers.

- van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning":
  encoder -> nearest-code quantisation (straight-through) -> decoder, trained with
  L = ||x - decoder(z + sg[z_q - z])||^2 + beta ||sg[z] - z_q||^2 + gamma ||z - sg[z_q]||^2
  (eq. 3; the quantizer is `t2i.nn.VectorQuantizer`, which also holds the EMA, k-means,
  dead-code, cosine and low-dimension options).
- Razavi, van den Oord & Vinyals 2019, "Generating Diverse High-Fidelity Images with
  VQ-VAE-2": a top level at a coarser grid; the bottom level's quantizer input and the
  decoder are both conditioned on the decoded top codes (their figure 2a).

Reconstruction is the mean squared error on [-1, 1]; PSNR is logged beside it. `VQVAE` can
add VQGAN's adversarial term (Esser et al. 2021; `t2i.models.adversarial`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from t2i.models.adversarial import AdversarialMixin
from t2i.models.tokenizer import ImageTokenizer
from t2i.nn import Decoder, Encoder, QuantizerOutput, VectorQuantizer, downsampled_size
from t2i.nn.metrics import psnr


def _quantizer(dim: int, config: dict) -> VectorQuantizer:
    """A VectorQuantizer over `dim` channels with the options of a tokenizer's config."""
    return VectorQuantizer(
        dim,
        config["codebook_size"],
        codebook_dim=config["codebook_dim"],
        beta=config["beta"],
        gamma=config["gamma"],
        ema_update=config["ema_update"],
        decay=config["decay"],
        kmeans_init=config["kmeans_init"],
        kmeans_iters=config["kmeans_iters"],
        use_cosine_sim=config["use_cosine_sim"],
        threshold_ema_dead_code=config["threshold_ema_dead_code"],
    )


def _quantizer_terms(q: QuantizerOutput, suffix: str = "") -> dict[str, Tensor]:
    """A quantizer's logged terms, named with an optional level suffix."""
    return {
        f"codebook{suffix}": q.codebook_loss,
        f"commitment{suffix}": q.commitment_loss,
        f"perplexity{suffix}": q.perplexity,
        f"usage{suffix}": q.usage,
    }


class VQVAE(AdversarialMixin, ImageTokenizer):
    """A VQ-VAE: a ResNet encoder, a vector quantizer and a ResNet decoder; with
    `disc_weight` > 0, a VQGAN's adversarial term.

    Args:
        image_size: image side in pixels; divisible by 2**len(channels).
        in_channels: image channels.
        channels: encoder stage widths, each halving the resolution (the decoder mirrors it):
            two stages turn 32 x 32 images into 8 x 8 codes.
        num_res_blocks: ResBlocks per stage.
        embed_dim: channels of the quantized feature map.
        codebook_size: number of codes.
        codebook_dim: size of a code if lower than embed_dim (projected); None = embed_dim.
        beta: weight of the codebook term ||sg[z] - z_q||^2 (unused with ema_update).
        gamma: weight of the commitment term ||z - sg[z_q]||^2 (the seed: gamma < beta).
        ema_update: update the codebook by exponential moving averages.
        decay: EMA decay of code updates and usage counts.
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        use_cosine_sim: l2-normalised codes and features.
        threshold_ema_dead_code: re-seed codes whose EMA usage falls below this (0 = off).
        disc_weight, disc_start, disc_layers, disc_channels: the adversarial term
            (`t2i.models.adversarial`; off at disc_weight 0): its weight, the training
            batches before it starts, and the PatchGAN discriminator's stride-2 layers and
            first width.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128),
        num_res_blocks: int = 2,
        embed_dim: int = 64,
        codebook_size: int = 512,
        codebook_dim: int | None = None,
        beta: float = 1.0,
        gamma: float = 0.25,
        ema_update: bool = False,
        decay: float = 0.99,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        use_cosine_sim: bool = False,
        threshold_ema_dead_code: float = 0.0,
        disc_weight: float = 0.0,  # times eq. 7's adaptive lambda; 0 = no discriminator
        disc_start: int = 0,  # training batches of reconstruction alone before it starts
        disc_layers: int = 3,  # stride-2 layers: 3 sees 70-px patches, 2 sees 34-px ones
        disc_channels: int = 64,  # width of its first layer (doubling per layer, up to 8x)
    ) -> None:
        super().__init__()
        self._grid = downsampled_size(image_size, len(channels))
        self.encoder = Encoder(in_channels, channels, embed_dim, num_res_blocks)
        self.quantizer = _quantizer(embed_dim, self.config)
        self.decoder = Decoder(embed_dim, channels, in_channels, num_res_blocks)
        self._init_adversarial()

    @property
    def num_tokens(self) -> int:
        return self.config.codebook_size

    @property
    def grid_size(self) -> int:
        return self._grid

    @property
    def decoder_last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Reconstruct through the quantizer: (reconstruction (N, C, H, W), quantizer output).

        Args:
            pixel_values: (N, C, H, W) in [-1, 1].
        """
        q = self.quantizer(self.encoder(pixel_values))  # quantized (N, D, h, w)
        return self.decoder(q.quantized), q

    def encode(self, pixel_values: Tensor) -> Tensor:
        """Code indices (N, h, w). See `ImageTokenizer.encode`."""
        return self.quantizer(self.encoder(pixel_values)).indices

    def decode(self, tokens: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1]. See `ImageTokenizer.decode`."""
        return self.decoder(self.quantizer.lookup(tokens)).clamp(-1, 1)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """recon (MSE) + beta * codebook + gamma * commitment, plus codebook usage and PSNR,
        and the adversarial terms when on (`adversarial_losses`).

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].
        """
        x = batch["pixel_values"]
        recon, q = self(x)
        mse = F.mse_loss(recon.float(), x.float())
        adversarial = self.adversarial_losses(x, recon, mse)  # {} when off or not started
        return {
            "loss": mse + self.quantizer.loss(q) + adversarial.pop("loss", 0.0),
            "recon": mse,
            "psnr": psnr(recon.detach().clamp(-1, 1), x).mean(),
            **_quantizer_terms(q),
            **adversarial,
        }


class VQVAE2(ImageTokenizer):
    """A two-level VQ-VAE-2: a coarse top grid and a fine bottom grid conditioned on it.

    x -> encoder_bottom -> h_b (bottom grid) -> encoder_top -> h_t -> quantize -> q_t;
    decoder_top(q_t) -> d_t at the bottom grid; quantize(conv([h_b; d_t])) -> q_b;
    decoder([d_t; q_b]) -> image. `encode` returns (top, bottom) index grids.

    Args:
        image_size: image side in pixels.
        in_channels: image channels.
        channels: bottom encoder stage widths (two stages: 32 x 32 images -> 8 x 8 codes).
        top_channels: top encoder stage widths, each halving the bottom grid again.
        num_res_blocks: ResBlocks per stage.
        embed_dim: channels of both quantized maps.
        codebook_size: codes per level.
        codebook_dim, beta, gamma, ema_update, decay, kmeans_init, kmeans_iters,
        use_cosine_sim, threshold_ema_dead_code: the quantizer options of `VQVAE`, both levels.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128),
        top_channels: Sequence[int] = (128,),
        num_res_blocks: int = 2,
        embed_dim: int = 64,
        codebook_size: int = 512,
        codebook_dim: int | None = None,
        beta: float = 1.0,
        gamma: float = 0.25,
        ema_update: bool = False,
        decay: float = 0.99,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        use_cosine_sim: bool = False,
        threshold_ema_dead_code: float = 0.0,
    ) -> None:
        super().__init__()
        bottom = downsampled_size(image_size, len(channels))
        self._grids = (downsampled_size(bottom, len(top_channels)), bottom)
        self.encoder_bottom = Encoder(in_channels, channels, embed_dim, num_res_blocks)
        self.encoder_top = Encoder(embed_dim, top_channels, embed_dim, num_res_blocks)
        self.quantizer_top = _quantizer(embed_dim, self.config)
        self.decoder_top = Decoder(embed_dim, top_channels, embed_dim, num_res_blocks)
        self.pre_quant_bottom = nn.Conv2d(2 * embed_dim, embed_dim, 1)
        self.quantizer_bottom = _quantizer(embed_dim, self.config)
        self.decoder = Decoder(2 * embed_dim, channels, in_channels, num_res_blocks)

    @property
    def num_tokens(self) -> int:
        return self.config.codebook_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self._grids

    def _quantize(self, pixel_values: Tensor) -> tuple[QuantizerOutput, QuantizerOutput, Tensor]:
        """Both levels' quantizer outputs and the decoded top map d_t (N, D, h_b, w_b)."""
        h_b = self.encoder_bottom(pixel_values)  # (N, D, h_b, w_b)
        q_t = self.quantizer_top(self.encoder_top(h_b))  # (N, D, h_t, w_t)
        d_t = self.decoder_top(q_t.quantized)  # (N, D, h_b, w_b)
        q_b = self.quantizer_bottom(self.pre_quant_bottom(torch.cat([h_b, d_t], dim=1)))
        return q_t, q_b, d_t

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, QuantizerOutput, QuantizerOutput]:
        """Reconstruct through both levels: (reconstruction, top output, bottom output).

        Args:
            pixel_values: (N, C, H, W) in [-1, 1].
        """
        q_t, q_b, d_t = self._quantize(pixel_values)
        return self.decoder(torch.cat([d_t, q_b.quantized], dim=1)), q_t, q_b

    def encode(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """(top (N, h_t, w_t), bottom (N, h_b, w_b)) code indices. See `ImageTokenizer`."""
        q_t, q_b, _ = self._quantize(pixel_values)
        return q_t.indices, q_b.indices

    def decode(self, tokens: tuple[Tensor, Tensor]) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] from (top, bottom) indices. See `ImageTokenizer`."""
        top, bottom = tokens
        d_t = self.decoder_top(self.quantizer_top.lookup(top))
        q_b = self.quantizer_bottom.lookup(bottom)
        return self.decoder(torch.cat([d_t, q_b], dim=1)).clamp(-1, 1)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """recon (MSE) + both levels' quantizer losses, plus each level's usage, and PSNR.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].
        """
        x = batch["pixel_values"]
        recon, q_t, q_b = self(x)
        mse = F.mse_loss(recon.float(), x.float())
        return {
            "loss": mse + self.quantizer_top.loss(q_t) + self.quantizer_bottom.loss(q_b),
            "recon": mse,
            "psnr": psnr(recon.detach().clamp(-1, 1), x).mean(),
            **_quantizer_terms(q_t, "_top"),
            **_quantizer_terms(q_b, "_bottom"),
        }
