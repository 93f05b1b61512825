"""MaskGITPipeline: the masked route (MaskGIT, Chang et al. 2022; Muse, Chang et al. 2023),
prompt -> images in a few parallel steps.

Stage by stage: CLIP tokenises the prompts and encodes them into the token states the masked
prior reads (and the negative prompts, for the unconditional branch of guidance); the masked
prior starts from a grid of mask tokens and, in `num_inference_steps` steps, predicts every
masked code at once and keeps the most confident (diffusers' `AmusedScheduler`), with
classifier-free guidance in one batched pass; with `image` and `mask_image` it starts from
the image's codes and redraws only the masked region's (inpainting); the image tokenizer
decodes the codes; CLIP keeps each prompt's best candidates (reranking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from t2i.models import CLIPModel, ImageTokenizer, MaskGITPrior
from t2i.pipelines.common import (
    CodeSampling,
    T2IPipeline,
    T2IPipelineOutput,
    image_tensor,
    negative_list,
)


@dataclass(frozen=True)
class MaskGITSampling(CodeSampling):
    """How the masked prior samples (recorded as `maskgit_<name>`).

    Args:
        guidance_scale: classifier-free guidance s; 1 runs the conditional model alone.
        temperature: softmax temperature of the drawn codes (0 = greedy).
        top_k: draw among the k most likely codes.
        top_p: draw within the nucleus of probability top_p.
        num_inference_steps: parallel decoding steps (each one pass of the transformer).
        choice_temperature: Gumbel noise on the confidences that choose which codes a step
            keeps, at the first step (annealed to 0 at the last).
        rerank: candidates drawn per prompt, of which CLIP keeps the best (None or 0: none).
    """

    RECORDED: ClassVar[tuple[str, ...]] = (
        "guidance_scale",
        "temperature",
        "num_inference_steps",
        "rerank",
    )
    PREFIX: ClassVar[str] = "maskgit_"

    num_inference_steps: int = 12
    choice_temperature: float = 2.0
    rerank: int | None = None


class MaskGITPipeline(T2IPipeline):
    """Text -> images through CLIP, a masked prior over image codes and a tokenizer.

    Args:
        clip: the CLIP model; its token states condition the masked prior, and it reranks.
        image_tokenizer: the tokenizer whose codes the prior fills in.
        masked_prior: the `MaskGITPrior`.
    """

    ROUTE: ClassVar[str] = "maskgit"

    model_cpu_offload_seq = "clip->masked_prior->image_tokenizer"
    settings_classes = (MaskGITSampling,)

    def __init__(
        self, clip: CLIPModel, image_tokenizer: ImageTokenizer, masked_prior: MaskGITPrior
    ):
        super().__init__()
        check_masked_prior(masked_prior)
        self.register_modules(clip=clip, image_tokenizer=image_tokenizer, masked_prior=masked_prior)
        self._init_defaults()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_inference_steps: int | None = None,
        choice_temperature: float | None = None,
        rerank: int | None = None,
        image: Image.Image | torch.Tensor | None = None,
        mask_image: Image.Image | np.ndarray | torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        return_dict: bool = True,
    ) -> T2IPipelineOutput | tuple:
        """Generate images for one prompt or a list of prompts, or inpaint an image.

        Args:
            prompt: the caption(s).
            num_images_per_prompt: images returned per prompt.
            generator: one for the batch, or one per image drawn (prompt by prompt; with
                `rerank`, one per candidate or one per image returned), as in diffusers.
            negative_prompt: what guidance steers away from, one per prompt or one for all
                (None: the null caption the prior trained on).
            guidance_scale: classifier-free guidance; None: the recorded default.
            temperature: softmax temperature of the codes (0 = greedy); None: recorded.
            top_k: draw among the k most likely codes.
            top_p: draw within the nucleus of probability top_p.
            num_inference_steps: parallel decoding steps; None: the recorded default.
            choice_temperature: Gumbel noise on which codes a step keeps (2.0 unless given).
            rerank: candidates per prompt of which CLIP keeps the best (0: none; None: the
                recorded default).
            image: inpainting: the image whose codes outside `mask_image` are kept.
            mask_image: inpainting: white (> 0.5) where the image is redrawn, black where it
                is kept, as diffusers' inpainting pipelines read it; a PIL image, or an
                (H, W) / (1, 1, H, W) array or tensor in [0, 1]. A code is redrawn when any
                of its pixels is.
            output_type: "pil", "np" (N, H, W, 3 floats in [0, 1]) or "pt" (N, 3, H, W).
            callback_on_step_end: called as f(pipe, step, step, {"codes": (N, image_len)})
                after each step, the mask token id where codes are still masked; the codes
                of the dict it returns go on.
            callback_on_step_end_tensor_inputs: the tensors it gets (["codes"]).
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).

        Returns:
            `.images`, prompt by prompt, `num_images_per_prompt` each (best first when
            reranked), and `.settings`, the `MaskGITSampling` the call used.
        """
        settings = MaskGITSampling.resolve(
            self.sampling_defaults,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_inference_steps=num_inference_steps,
            choice_temperature=choice_temperature,
            rerank=rerank,
        )
        settings, prompts, draws, generator = self.start_call(
            prompt, num_images_per_prompt, settings, rerank, generator, output_type
        )
        names = self.callback_names(callback_on_step_end_tensor_inputs)
        init, keep = self.inpaint_codes(image, mask_image, len(prompts) * draws)
        # 1. the caption (and the negative prompt), as the masked prior reads it
        cond = self.caption_condition(
            self.masked_prior, prompts, draws, negative_list(negative_prompt, prompts)
        )
        # 2. the masked prior fills in the codes, 3. the tokenizer decodes them
        with self.progress_bar(total=settings.num_inference_steps) as bar:

            def step(i: int, codes: torch.Tensor) -> torch.Tensor | None:
                bar.update()
                return self.run_callback(callback_on_step_end, names, i, i, codes)

            codes = self.masked_prior.sample(
                cond.get("input_ids"),
                cond.get("text_states"),
                num_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                generator=generator,
                init_tokens=init,
                keep=keep,
                choice_temperature=settings.choice_temperature,
                callback=step,
                negative_input_ids=cond.get("negative_input_ids"),
                negative_text_states=cond.get("negative_text_states"),
            )
        images = self.decode_codes(self.masked_prior, codes)
        # 4. CLIP keeps each prompt's best candidates
        if settings.rerank:
            images = self.rerank(images, prompts, draws, num_images_per_prompt)
        return self.output(images, output_type, return_dict, settings)

    def inpaint_codes(
        self, image: Any, mask_image: Any, n: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """An inpainting call's starting codes (n, image_len) and which of them stay (True),
        in the masked prior's order; (None, None) without an image."""
        if (image is None) != (mask_image is None):
            given = "image" if mask_image is None else "mask_image"
            raise ValueError(f"inpainting needs both image and mask_image; {given} came alone")
        if image is None:
            return None, None
        prior = self.masked_prior
        size = self.image_tokenizer.config.image_size
        x = image_tensor(image, size).to(self.device)
        codes = prior.flatten(self.image_tokenizer.encode(x))  # (1, image_len)
        redraw = mask_tensor(mask_image, size).to(self.device)  # (1, 1, size, size) bool
        levels = tuple(
            F.adaptive_max_pool2d(redraw.float(), g)[:, 0] > 0 for g in prior.grids
        )  # a code is redrawn when any of its pixels is
        keep = ~prior.flatten(levels[0] if len(levels) == 1 else levels)
        if keep.all():
            raise ValueError("mask_image marks nothing to redraw (white marks what is redrawn)")
        return codes.expand(n, -1), keep.expand(n, -1)


def mask_tensor(mask: Image.Image | np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """An inpainting mask -> (1, 1, size, size) bool, True where the image is redrawn.

    Args:
        mask: a PIL image (white: redraw), or an (H, W), (1, H, W) or (1, 1, H, W) array or
            tensor in [0, 1].
        size: the tokenizer's image size.
    """
    if isinstance(mask, Image.Image):
        array = np.asarray(mask.convert("L").resize((size, size), Image.NEAREST), np.float32)
        x = torch.from_numpy(array / 255.0)[None, None]
    else:
        x = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).float()
        if x.dim() not in (2, 3, 4) or (x.dim() > 2 and x.shape[-3] != 1) or x.numel() == 0:
            raise ValueError(
                f"mask_image of shape {tuple(x.shape)}: give one channel, (H, W), (1, H, W) "
                "or (1, 1, H, W)"
            )
        x = x.reshape(1, 1, *x.shape[-2:])
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="nearest")
    return x > 0.5


def check_masked_prior(model: Any) -> None:
    """A ValueError unless the model is a masked prior (a DALL-E prior samples one code a
    step and has no mask token)."""
    if not isinstance(model, MaskGITPrior):
        raise ValueError(
            f"masked_prior: a {type(model).__name__}; the masked route needs a MaskGITPrior "
            "(model.type: maskgit_prior)"
        )
