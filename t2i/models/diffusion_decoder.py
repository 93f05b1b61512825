"""unCLIP's decoder as pixel-space diffusion: a CLIP image embedding -> an image.

Ramesh et al. 2022, section 2.1 (after GLIDE, Nichol et al. 2021): a U-Net denoises the image,
and the CLIP image embedding is projected into the U-Net's timestep embedding, so every
residual block reads it. The U-Net is diffusers' `UNet2DModel` with `class_embed_type=
"identity"` (the projected embedding is added to the timestep embedding as a class
embedding would be); the noising and the samplers are diffusers' schedulers (DDPM to train;
DDIM or DPM-Solver++ to sample). It predicts the velocity v = sqrt(a) eps - sqrt(1 - a) x0
(Salimans & Ho 2022) rather than the noise: at high noise, predicting eps asks nothing of the
condition (x_t is nearly the noise), so an eps model learns to ignore the embedding where
it matters most, the layout of the image. Classifier-free guidance: in training
the embedding is replaced by a learned null one with probability `cond_drop_prob`; at
sampling, the conditional and null noise predictions come from one batched pass and are
mixed as v_u + s (v_c - v_u).

This is the alternative to the autoregressive decoder (`DALLEPrior` with `text_encoder=
"clip_image"`, which predicts the image tokenizer's codes): it needs no tokenizer, and
draws all pixels at once in each of its steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from t2i.models.base import T2IModel
from t2i.nn.diffusion import guided_denoise


class DiffusionDecoder(T2IModel):
    """A U-Net denoiser over images, conditioned on a CLIP image embedding.

    Args:
        image_size: side of the square images, in pixels.
        embed_dim: CLIP's embedding size.
        block_out_channels: the U-Net's channels at each resolution (one halving between).
        attention_levels: which resolutions have self-attention, one bool per level.
        layers_per_block: residual blocks per resolution.
        norm_num_groups: GroupNorm groups (divides every channel count).
        num_train_timesteps: diffusion steps of the training (DDPM) schedule.
        beta_schedule: a diffusers beta schedule ("squaredcos_cap_v2" is the cosine one).
        cond_drop_prob: chance that a training embedding is replaced by the null one.
    """

    _no_split_modules = ["ResnetBlock2D"]  # FSDP's units
    READS = frozenset({"pixel_values", "image_embeds"})

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        embed_dim: int = 128,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        attention_levels: tuple[bool, ...] = (False, False, True),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        cond_drop_prob: float = 0.1,
    ) -> None:
        super().__init__()
        if len(attention_levels) != len(block_out_channels):
            raise ValueError(
                f"attention_levels={list(attention_levels)} needs one bool per level of "
                f"block_out_channels={list(block_out_channels)}"
            )
        if image_size % 2 ** (len(block_out_channels) - 1):
            raise ValueError(
                f"image_size={image_size} must halve {len(block_out_channels) - 1} times"
            )
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob={cond_drop_prob} must be in [0, 1)")
        time_dim = 4 * block_out_channels[0]  # UNet2DModel's timestep embedding width
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(
                "AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels
            ),
            up_block_types=tuple(
                "AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)
            ),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            attention_head_dim=block_out_channels[0],
            class_embed_type="identity",
        )
        self.embed_proj = nn.Sequential(
            nn.Linear(embed_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.null_embed = nn.Parameter(0.02 * torch.randn(embed_dim))
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="v_prediction",
            clip_sample=True,  # images live in [-1, 1]
        )

    def condition(self, image_embeds: Tensor, drop: Tensor | None = None) -> Tensor:
        """The embedding as the U-Net's class embedding (B, time_dim), the rows `drop` (B,)
        marks (in training: at random) replaced by the null embedding."""
        if image_embeds.shape[1:] != (self.config.embed_dim,):
            raise ValueError(
                f"image_embeds of shape {tuple(image_embeds.shape)}; this decoder reads (B, "
                f"{self.config.embed_dim})"
            )
        embeds = F.normalize(image_embeds.float(), dim=-1)
        if drop is None:
            p = self.config.cond_drop_prob if self.training else 0.0
            drop = torch.rand(embeds.shape[0], device=embeds.device) < p
        embeds = torch.where(drop[:, None], self.null_embed.float(), embeds)
        return self.embed_proj(embeds.to(self.null_embed.dtype))

    def forward(self, noisy: Tensor, timesteps: Tensor, cond: Tensor) -> Tensor:
        """The predicted velocity (B, 3, H, W).

        Args:
            noisy: (B, 3, H, W) noised images.
            timesteps: (B,) diffusion steps.
            cond: (B, time_dim) from `condition`.
        """
        return self.unet(noisy.to(cond.dtype), timesteps, class_labels=cond).sample

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Mean squared error of the predicted velocity.

        Args:
            batch: `pixel_values` (B, 3, H, W) in [-1, 1] and `image_embeds` (B, embed_dim).
        """
        x0 = batch["pixel_values"].float()
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        pred = self(noisy, t, self.condition(batch["image_embeds"])).float()
        mse = F.mse_loss(pred, self.scheduler.get_velocity(x0, noise, t))
        return {"loss": mse, "mse": mse.detach()}

    @torch.no_grad()
    def sample(
        self,
        image_embeds: Tensor,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 25,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1] for a batch of CLIP image embeddings.

        Args:
            image_embeds: (B, embed_dim) CLIP image embeddings.
            guidance_scale: classifier-free guidance s; 1 uses the conditional model alone.
            num_inference_steps: denoising steps.
            sampler: "ddim" (eta 0: deterministic given the first noise) or "dpm"
                (DPM-Solver++).
            generator: the source of the starting noise.
        """
        b = image_embeds.shape[0]
        keep = torch.zeros(b, dtype=torch.bool, device=image_embeds.device)
        cond = self.condition(image_embeds, drop=keep)
        if guidance_scale != 1.0:  # one batch: conditional rows, then the null embedding
            cond = torch.cat([cond, self.condition(image_embeds, drop=~keep)])
        size = self.config.image_size
        x = guided_denoise(
            lambda inp, steps: self(inp, steps, cond),
            self.scheduler.config,
            (b, 3, size, size),
            guidance_scale,
            num_inference_steps,
            sampler,
            generator,
            keep.device,
        )
        return x.clamp(-1.0, 1.0)

    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch's images and the decoder's draws from their CLIP embeddings.

        Args:
            batch: as for `training_losses`.
            generator: the source of the starting noise.
        """
        return {
            "data": batch["pixel_values"],
            "samples": self.sample(batch["image_embeds"], generator=generator),
        }
