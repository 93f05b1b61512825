"""LatentDiffusionPipeline: the latent diffusion route (Rombach et al. 2022), prompt -> images.

Stage by stage, as diffusers' Stable Diffusion pipeline: CLIP encodes the prompts and the
negative prompts (the empty caption when none is given) into token states; the denoiser
(a `UNet2DConditionModel` reading them by cross-attention) turns noise into latents in
`num_inference_steps` of a diffusers scheduler, with classifier-free guidance from the
conditional and unconditional branches in one batched pass; with `image` and `strength`,
it starts from the image's latents noised part-way (SDEdit); the KL autoencoder decodes the
latents to pixels; CLIP reranks the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import SchedulerMixin
from PIL import Image

from t2i.models import CLIPModel, LatentAutoencoder, LatentDenoiser
from t2i.nn.diffusion import SAMPLERS
from t2i.pipelines.common import (
    SamplingSettings,
    T2IPipeline,
    T2IPipelineOutput,
    image_tensor,
    negative_list,
)


@dataclass(frozen=True)
class LDMSampling(SamplingSettings):
    """How the latent diffusion route samples (recorded as `ldm_<name>`).

    Args:
        guidance_scale: classifier-free guidance s; 1 runs the conditional model alone.
        num_inference_steps: denoising steps.
        sampler: the scheduler by name: "ddim", "dpm" (DPM-Solver++ multistep), "euler" or
            "unipc", made from the scheduler component's config (None: that component).
        strength: with an init image, the share of the schedule it is noised to (0: the
            image's reconstruction, 1: pure noise).
        rerank: candidates drawn per prompt, of which CLIP keeps the best (None: none).
    """

    RECORDED: ClassVar[tuple[str, ...]] = ("guidance_scale", "num_inference_steps", "sampler")
    PREFIX: ClassVar[str] = "ldm_"

    guidance_scale: float = 5.0
    num_inference_steps: int = 20
    sampler: str | None = None  # None: the pipeline's scheduler component
    strength: float = 0.8
    rerank: int | None = None


class LatentDiffusionPipeline(T2IPipeline):
    """Text -> images through CLIP, a latent denoiser and a KL autoencoder.

    Args:
        vae: the `LatentAutoencoder` (a `KLAutoencoder`, or `VQLatents`) whose scaled
            latents the denoiser draws.
        unet: the `LatentDenoiser`.
        clip: the CLIP model; its token states condition the denoiser, and it reranks.
        scheduler: a diffusers scheduler whose config the samplers start from (the
            denoiser's training schedule).
    """

    ROUTE: ClassVar[str] = "ldm"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]

    model_cpu_offload_seq = "clip->unet->vae"
    settings_classes = (LDMSampling,)

    def __init__(
        self,
        vae: LatentAutoencoder,
        unet: LatentDenoiser,
        clip: CLIPModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        check_denoiser(unet)
        self.register_modules(vae=vae, unet=unet, clip=clip, scheduler=scheduler)
        self._init_defaults()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        image: Image.Image | torch.Tensor | None = None,
        strength: float | None = None,
        rerank: int | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        return_dict: bool = True,
    ) -> T2IPipelineOutput | tuple:
        """Generate images for one prompt or a list of prompts.

        Args:
            prompt: the caption(s).
            negative_prompt: what the guidance steers away from, one per prompt or one for
                all (None: the empty caption, the unconditional branch the model trained on).
            num_images_per_prompt: images returned per prompt.
            generator: the source of randomness: one for the batch, or one per image drawn
                (prompt by prompt; with `rerank`, one per candidate), as in diffusers.
            guidance_scale: classifier-free guidance; None here and below: the pipeline's
                recorded setting, else the library's (`LDMSampling`).
            num_inference_steps: denoising steps.
            sampler: "ddim", "dpm", "euler" or "unipc".
            image: an init image (image-to-image): its latents, noised to `strength`.
            strength: how far into the schedule the init image is noised.
            rerank: draw this many candidates per prompt and keep the
                `num_images_per_prompt` that CLIP scores highest.
            output_type: "pil", "np" (N, H, W, 3 floats in [0, 1]) or "pt" (N, 3, H, W).
            callback_on_step_end: called as f(pipe, step, timestep, {"latents": x}) after
                each denoising step, as diffusers calls it; the latents of the dict it
                returns go on.
            callback_on_step_end_tensor_inputs: the tensors it gets (["latents"]).
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).

        Returns:
            `.images`, prompt by prompt (best first when reranked), and `.settings`, the
            `LDMSampling` the call used.
        """
        settings = LDMSampling.resolve(
            self.sampling_defaults,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            sampler=sampler,
            strength=strength,
            rerank=rerank,
        )
        names = self.callback_names(callback_on_step_end_tensor_inputs)
        sampler = settings.sampler or self.sampler_name()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: use one of {tuple(SAMPLERS)}")
        settings, prompts, draws, generator = self.start_call(
            prompt, num_images_per_prompt, settings, rerank, generator, output_type
        )
        # 1. the captions' CLIP states, and the unconditional branch's
        cond, uncond = self.encode_prompt(prompts, negative_prompt, draws)
        # 2. image-to-image: the init image's latents
        init = None
        if image is not None:
            x = image_tensor(image, self.vae.image_size).to(self.device)
            init = self.vae.encode(x).expand(len(cond), -1, -1, -1)
        # 3. the denoiser draws latents, 4. the autoencoder decodes them
        with self.progress_bar(total=settings.num_inference_steps) as bar:

            def step(i: int, t: Any, latents: torch.Tensor) -> torch.Tensor | None:
                bar.update()
                return self.run_callback(callback_on_step_end, names, i, t, latents)

            latents = self.unet.sample(
                cond,
                uncond if settings.guidance_scale != 1.0 else None,
                guidance_scale=settings.guidance_scale,
                num_inference_steps=settings.num_inference_steps,
                sampler=sampler,
                generator=generator,
                init_latents=init,
                strength=settings.strength if init is not None else 1.0,
                callback=step,
                scheduler_config=self.scheduler.config,
            )
        images = self.vae.decode(latents.to(self.vae.dtype)).float().clamp(-1, 1)
        # 5. CLIP keeps each prompt's best candidates
        if settings.rerank:
            images = self.rerank(images, prompts, draws, num_images_per_prompt)
        return self.output(images, output_type, return_dict, settings)

    def encode_prompt(
        self, prompts: list[str], negative: str | Sequence[str] | None, draws: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLIP token states of each prompt and of its negative prompt (the empty caption
        when None), each repeated `draws` times: two (N * draws, L, W) tensors."""
        negatives = negative_list(negative, prompts) or [""] * len(prompts)
        ids = torch.cat([self.clip.tokenize(prompts), self.clip.tokenize(negatives, True)])
        ids = ids.to(self.device)
        if ids.shape[1] != self.unet.config.context_length:
            raise ValueError(
                f"CLIP tokenises to {ids.shape[1]} tokens; the denoiser reads "
                f"{self.unet.config.context_length}"
            )
        states = self.clip.text_features(ids).states.repeat_interleave(draws, dim=0)
        n = len(prompts) * draws
        return states[:n], states[n:]

    def sampler_name(self) -> str:
        """The name (a key of SAMPLERS) of the scheduler component's class."""
        kind = type(self.scheduler)
        names = [name for name, cls in SAMPLERS.items() if cls is kind]
        if not names:
            raise ValueError(
                f"scheduler {kind.__name__} is none of t2i's samplers {tuple(SAMPLERS)}"
            )
        return names[0]


def check_denoiser(unet: LatentDenoiser) -> None:
    """A ValueError unless the denoiser reads latents and caption states."""
    if not {"latents", "text_states"} <= unet.reads:
        raise ValueError(
            f"unet reads {sorted(unet.reads)}; the latent diffusion route's denoiser reads "
            "latents and CLIP's caption states"
        )
