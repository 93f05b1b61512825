"""The latent diffusion denoiser: a U-Net over an autoencoder's latents reading the caption's
CLIP token states by cross-attention at every resolution, or a diffusion transformer.

Rombach et al. 2022 (LDM), section 3.3: the denoiser eps_theta(z_t, t, tau(y)) attends to the
text encoder's per-token states in each transformer block (`encoder_hidden_states` of
diffusers' `UNet2DConditionModel`), so the caption reaches every resolution, unlike a
condition added to the timestep embedding. Training is diffusers' `train_text_to_image.py`:
DDPM noising, the noise (or the velocity v, Salimans & Ho 2022) as the target, an optional
noise offset (the mean of each latent channel perturbed too, so the model can shift overall
brightness) and min-SNR-gamma loss weighting (Hang et al. 2023, eq. 6). Captions dropped for
classifier-free guidance are replaced by the empty caption (`data.caption_drop_prob`), so
the unconditional branch at sampling is the CLIP states of "" (or of a negative prompt).

`backbone: transformer` swaps the U-Net for diffusers' `PixArtTransformer2DModel` (Chen et
al. 2023, PixArt-alpha: DiT blocks over latent patches, timestep by adaLN-single, the caption
states projected and read by cross-attention in every block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, PixArtTransformer2DModel, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.training_utils import compute_snr
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.nn.diffusion import guided_denoise

PREDICTIONS = ("epsilon", "v_prediction")
BACKBONES = ("unet", "transformer")


class LatentDenoiser(T2IModel):
    """A text-conditioned denoiser over latent grids: a U-Net, or a diffusion transformer.

    Args:
        latent_channels: channels of the autoencoder's latents.
        latent_size: side of the latent grid.
        block_out_channels: the U-Net's channels per resolution (one halving between).
        cross_attention_levels: which resolutions read the caption, one bool per level.
        layers_per_block: residual blocks per resolution.
        attention_head_dim: channels per attention head.
        pooled_text: the U-Net also adds the caption states, attention-pooled, to its
            timestep embedding (diffusers' `addition_embed_type="text"`), a global path
            for the caption beside cross-attention, as Imagen and SDXL add a pooled one.
        backbone: "unet" (`UNet2DConditionModel`; the sizes above) or "transformer"
            (`PixArtTransformer2DModel`; the sizes below, and attention_head_dim).
        transformer_layers: the transformer's blocks.
        num_attention_heads: its heads (width: heads x attention_head_dim).
        patch_size: its latent patches' side (tokens: (latent_size / patch_size) ** 2).
        norm_num_groups: GroupNorm groups (divides every channel count).
        clip_width: width of the CLIP token states (`cross_attention_dim`).
        context_length: caption length in tokens (CLIP's).
        num_train_timesteps: steps of the training (DDPM) schedule.
        beta_schedule: a diffusers beta schedule; "scaled_linear" with Stable Diffusion's
            betas by default, whose last step keeps some signal (the cosine schedule's
            alpha_bar reaches 0 there, where an epsilon model's x0 estimate, which
            DPM-Solver++ and UniPC step on, diverges).
        beta_start: the first beta.
        beta_end: the last beta.
        prediction_type: "epsilon" (the noise) or "v_prediction".
        noise_offset: std of the per-channel offset added to the training noise (0: none).
        snr_gamma: min-SNR-gamma loss weighting (None: the plain MSE).
        unet_config: a diffusers `UNet2DConditionModel` config (a pretrained U-Net's
            config.json, `t2i.models.external`): the U-Net is built from it instead of the
            sizes above; its in_channels and cross_attention_dim must equal latent_channels
            and clip_width, and its downsampling must divide latent_size.
    """

    # FSDP's units (those of diffusers' U-Net; a DiT's blocks are BasicTransformerBlocks)
    _no_split_modules = ["BasicTransformerBlock", "ResnetBlock2D"]
    READS = frozenset({"latents", "text_states"})

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_size: int = 8,
        block_out_channels: Sequence[int] = (64, 128),
        cross_attention_levels: Sequence[bool] = (True, True),
        layers_per_block: int = 1,
        attention_head_dim: int = 32,
        norm_num_groups: int = 32,
        clip_width: int = 128,
        context_length: int = 32,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "scaled_linear",
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        prediction_type: str = "epsilon",
        noise_offset: float = 0.0,
        snr_gamma: float | None = None,
        backbone: str = "unet",
        pooled_text: bool = False,
        transformer_layers: int = 4,
        num_attention_heads: int = 4,
        patch_size: int = 1,
        unet_config: dict | None = None,
    ) -> None:
        super().__init__()
        if len(cross_attention_levels) != len(block_out_channels):
            raise ValueError(
                f"cross_attention_levels={list(cross_attention_levels)} needs one bool per "
                f"level of block_out_channels={list(block_out_channels)}"
            )
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type={prediction_type!r}: use one of {PREDICTIONS}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r}: use one of {BACKBONES}")
        if backbone == "transformer":
            if latent_size % patch_size:
                raise ValueError(f"patch_size={patch_size} must divide latent_size={latent_size}")
            width = num_attention_heads * attention_head_dim
            self.transformer = PixArtTransformer2DModel(
                num_attention_heads=num_attention_heads,
                attention_head_dim=attention_head_dim,
                in_channels=latent_channels,
                out_channels=latent_channels,
                num_layers=transformer_layers,
                cross_attention_dim=width,
                sample_size=latent_size,
                patch_size=patch_size,
                caption_channels=clip_width,
                num_embeds_ada_norm=num_train_timesteps,
                use_additional_conditions=False,
            )
        elif unet_config is not None:
            self.unet = self._given_unet(unet_config, latent_channels, latent_size, clip_width)
        else:
            self.unet = self._unet(
                latent_size, latent_channels, block_out_channels, cross_attention_levels,
                layers_per_block, attention_head_dim, norm_num_groups, clip_width, pooled_text,
            )  # fmt: skip
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
            clip_sample=False,  # latents are not bounded to [-1, 1]
        )

    @staticmethod
    def _unet(
        latent_size: int,
        latent_channels: int,
        block_out_channels: Sequence[int],
        cross_attention_levels: Sequence[bool],
        layers_per_block: int,
        attention_head_dim: int,
        norm_num_groups: int,
        clip_width: int,
        pooled_text: bool,
    ) -> UNet2DConditionModel:
        """The U-Net backbone, cross-attention blocks at the levels that read the caption."""
        levels = list(cross_attention_levels)
        if pooled_text and clip_width % attention_head_dim:
            raise ValueError(
                f"pooled_text pools clip_width={clip_width} in heads of "
                f"attention_head_dim={attention_head_dim}, which must divide it"
            )
        pooling = dict(addition_embed_type="text") if pooled_text else {}
        return UNet2DConditionModel(
            sample_size=latent_size,
            in_channels=latent_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels),
            up_block_types=tuple(
                "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)
            ),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=clip_width,
            addition_embed_type_num_heads=clip_width // attention_head_dim,
            **pooling,
        )

    @staticmethod
    def _given_unet(
        config: dict, latent_channels: int, latent_size: int, clip_width: int
    ) -> UNet2DConditionModel:
        """A U-Net of a given diffusers config, checked against the latents and captions it
        will read."""
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        unet = UNet2DConditionModel.from_config(config)
        autoencoder = ("autoencoder", "an autoencoder with latent_channels")
        for key, have, want, (reader, fix) in [
            ("in_channels", unet.config.in_channels, latent_channels, autoencoder),
            ("out_channels", unet.config.out_channels, latent_channels, autoencoder),
            ("cross_attention_dim", unet.config.cross_attention_dim, clip_width,
             ("CLIP", "a CLIP with text_width")),
        ]:  # fmt: skip
            if have != want:
                raise ValueError(
                    f"the U-Net's {key}={have} but the {reader} gives {want}: give {fix}={have}, "
                    "or another U-Net"
                )
        halvings = len(unet.config.block_out_channels) - 1
        if latent_size % 2**halvings:
            raise ValueError(
                f"the U-Net halves its input {halvings} times, which a {latent_size} x "
                f"{latent_size} latent grid cannot be"
            )
        return unet

    @property
    def backbone(self) -> torch.nn.Module:
        """The network: the U-Net or the transformer."""
        return self.transformer if self.config.backbone == "transformer" else self.unet

    def lora_defaults(self) -> tuple[str, tuple[str, ...]]:
        """LoRA in the attention projections of the backbone (diffusers' default targets)."""
        scope = "transformer" if self.config.backbone == "transformer" else "unet"
        return scope, ("to_q", "to_k", "to_v", "to_out.0")

    def forward(self, latents: Tensor, timesteps: Tensor, text_states: Tensor) -> Tensor:
        """The prediction (noise or velocity) for noisy latents (B, C, h, w) at timesteps (B,),
        reading the caption states (B, L, clip_width)."""
        net = self.backbone
        states, latents = text_states.to(net.dtype), latents.to(net.dtype)
        if self.config.backbone == "transformer":
            timesteps = torch.as_tensor(timesteps, device=latents.device).expand(len(latents))
        return net(latents, encoder_hidden_states=states, timestep=timesteps).sample

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The denoising loss on a batch of latents and caption states.

        Args:
            batch: `latents` (B, C, h, w), scaled to unit variance; `text_states` (B, L, W).
        """
        x0 = batch["latents"].float()
        noise = torch.randn_like(x0)
        if self.config.noise_offset:
            noise = noise + self.config.noise_offset * torch.randn(
                x0.shape[0], x0.shape[1], 1, 1, device=x0.device
            )
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        if self.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.scheduler.get_velocity(x0, noise, t)
        pred = self(noisy, t, batch["text_states"]).float()
        per_sample = F.mse_loss(pred, target, reduction="none").flatten(1).mean(1)  # (B,)
        loss = per_sample.mean()
        if self.config.snr_gamma is not None:
            snr = compute_snr(self.scheduler, t)
            weight = torch.clamp(snr, max=self.config.snr_gamma)
            weight = weight / (snr + 1 if self.config.prediction_type == "v_prediction" else snr)
            loss = (per_sample * weight).mean()
        return {"loss": loss, "mse": per_sample.mean().detach()}

    @torch.no_grad()
    def sample(
        self,
        text_states: Tensor,
        uncond_states: Tensor | None = None,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 20,
        sampler: str = "dpm",
        generator: torch.Generator | list[torch.Generator] | None = None,
        init_latents: Tensor | None = None,
        strength: float = 1.0,
        callback: Callable[[int, Tensor, Tensor], None] | None = None,
        scheduler_config: dict | None = None,
    ) -> Tensor:
        """Latents (B, C, h, w) for caption states, by guided denoising.

        Args:
            text_states: (B, L, W) the captions' CLIP states.
            uncond_states: (B, L, W) the unconditional branch's (the empty caption's, or a
                negative prompt's); needed when guidance_scale != 1.
            guidance_scale: classifier-free guidance s; 1 runs the conditional model alone.
            num_inference_steps: denoising steps (of the full schedule).
            sampler: a name of `t2i.nn.diffusion.SAMPLERS`.
            generator: the source of the noise (one per image, or one for all).
            init_latents: start from these latents noised to `strength` (image-to-image).
            strength: how far into the schedule to noise `init_latents` (0: returned as
                they are; 1: pure noise).
            callback: called as f(step, timestep, latents) after each step.
            scheduler_config: the noise schedule the sampler starts from (None: the
                training scheduler's).
        """
        guided = guidance_scale != 1.0
        if guided and uncond_states is None:
            raise ValueError("guidance_scale != 1 needs uncond_states (the empty caption's)")
        states = torch.cat([text_states, uncond_states]) if guided else text_states
        c = self.config
        shape = (text_states.shape[0], c.latent_channels, c.latent_size, c.latent_size)
        return guided_denoise(
            lambda x, t: self(x, t, states),
            scheduler_config or self.scheduler.config,
            shape,
            guidance_scale,
            num_inference_steps,
            sampler,
            generator,
            text_states.device,
            init=init_latents,
            strength=strength,
            callback=callback,
        )

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch's own latents and latents drawn for its captions (unguided, 20 DPM-Solver
        steps), for the trainer to decode.

        Args:
            batch: as for `training_losses`.
            generator: the source of randomness.
        """
        samples = self.sample(batch["text_states"], num_inference_steps=20, generator=generator)
        return {"data": batch["latents"], "samples": samples}
