"""Tiny latent diffusion parts shared by the LDM tests: a KL autoencoder (16 px -> 4 x 8 x 8),
a cross-attention denoiser, and the pipeline over them with the tiny CLIP."""

from __future__ import annotations

import tiny
import torch
from diffusers import DPMSolverMultistepScheduler

AUTOENCODER = dict(image_size=16, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4)
DENOISER = dict(
    latent_channels=4,
    latent_size=8,
    block_out_channels=(16, 32),
    cross_attention_levels=(True, True),
    attention_head_dim=8,
    norm_num_groups=8,
    clip_width=32,
    context_length=32,
    num_train_timesteps=1000,
)
TRANSFORMER = dict(  # the same denoiser with the diffusion transformer backbone
    DENOISER, backbone="transformer", transformer_layers=2, num_attention_heads=2, patch_size=2
)
BACKBONES = {
    "unet": DENOISER,
    "unet_pooled": dict(DENOISER, pooled_text=True),  # the caption pooled into the timestep
    "transformer": TRANSFORMER,
}


VQ = dict(image_size=16, channels=(8, 16), num_res_blocks=1, embed_dim=4, codebook_size=16)


def parts(seed: int = 0, backbone: str = "unet", vq: bool = False) -> dict:
    """vae (the KL autoencoder, or with `vq` a VQ-VAE's latents, 4 x 4 x 4), unet (of
    `backbone`), clip and scheduler, seeded, in eval mode."""
    from t2i.models import CLIPModel, KLAutoencoder, LatentDenoiser, VQLatents

    torch.manual_seed(seed)
    if vq:
        vae = VQLatents(vqvae=VQ, scaling_factor=2.0).eval()
        unet = LatentDenoiser(**{**BACKBONES[backbone], "latent_size": 4}).eval()
    else:
        vae = KLAutoencoder(**AUTOENCODER, scaling_factor=1.0).eval()
        unet = LatentDenoiser(**BACKBONES[backbone]).eval()
    clip = CLIPModel(**tiny.CLIP).eval()
    scheduler = DPMSolverMultistepScheduler.from_config(unet.scheduler.config)
    return dict(vae=vae, unet=unet, clip=clip, scheduler=scheduler)


def pipeline(seed: int = 0, **options):
    """A tiny untrained LatentDiffusionPipeline (`options`: of `parts`)."""
    from t2i.pipelines import LatentDiffusionPipeline

    pipe = LatentDiffusionPipeline(**parts(seed, **options))
    pipe.set_progress_bar_config(disable=True)
    return pipe
