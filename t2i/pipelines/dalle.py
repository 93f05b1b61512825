"""DALLEPipeline: the DALL-E route (Ramesh et al. 2021), prompt -> images.

Stage by stage: CLIP tokenises the prompts (and, for a prior that reads CLIP's token states,
encodes them); the autoregressive prior draws the image codes one at a time with
classifier-free guidance, optionally primed with the top rows of an image's codes; the image
tokenizer decodes the codes to pixels; CLIP scores the candidates against their prompt and
keeps the best (reranking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from PIL import Image

from t2i.models import CLIPModel, DALLEPrior, ImageTokenizer
from t2i.pipelines.common import (
    CodeSampling,
    T2IPipeline,
    T2IPipelineOutput,
    negative_list,
)


@dataclass(frozen=True)
class DALLESampling(CodeSampling):
    """How the DALL-E prior samples, and how many candidates CLIP reranks.

    Args:
        guidance_scale: classifier-free guidance s; 1 turns it off.
        temperature: softmax temperature of the prior (0 = greedy).
        top_k: sample among the k most likely codes.
        top_p: sample within the nucleus of probability top_p.
        rerank: candidates drawn per prompt, of which CLIP keeps the best (None or 0: no
            reranking). A pipeline may record one; a call for more images than it records
            draws as many candidates as images (CLIP then only orders them).
    """

    RECORDED: ClassVar[tuple[str, ...]] = ("guidance_scale", "temperature", "rerank")

    rerank: int | None = None


class DALLEPipeline(T2IPipeline):
    """Text -> images through CLIP, an autoregressive prior over image codes and a tokenizer.

    Args:
        clip: the CLIP model; owns the text tokenizer, conditions the prior (its "clip" text
            encoder) and reranks candidates.
        image_tokenizer: the tokenizer whose codes the prior draws (DiscreteVAE, VQVAE, VQVAE2).
        prior: the `DALLEPrior` reading the caption.
    """

    ROUTE: ClassVar[str] = "dalle"

    model_cpu_offload_seq = "clip->prior->image_tokenizer"
    settings_classes = (DALLESampling,)

    def __init__(self, clip: CLIPModel, image_tokenizer: ImageTokenizer, prior: DALLEPrior):
        super().__init__()
        check_prior(prior)
        self.register_modules(clip=clip, image_tokenizer=image_tokenizer, prior=prior)
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
        rerank: int | None = None,
        image: Image.Image | torch.Tensor | None = None,
        num_prime_rows: int = 0,
        output_type: str = "pil",
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        return_dict: bool = True,
    ) -> T2IPipelineOutput | tuple:
        """Generate images for one prompt or a list of prompts.

        Args:
            prompt: the caption(s).
            num_images_per_prompt: images returned per prompt.
            generator: the source of randomness: one for the batch, or one per image drawn
                (prompt by prompt; with `rerank`, one per candidate), as in diffusers, so that
                an image depends on its own generator alone.
            negative_prompt: what guidance steers away from, one per prompt or one for all:
                the unconditional branch of classifier-free guidance reads it instead of the
                null caption the prior trained on (None). At guidance 1 it has no effect.
            guidance_scale: classifier-free guidance; 1 turns it off; None: the pipeline's
                recorded default (`sampling_defaults`, 3.0 unless it records another).
            temperature: softmax temperature of the prior (0 = greedy); None: the recorded
                default (1.0 unless it records another).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            rerank: draw this many candidates per prompt and keep the
                `num_images_per_prompt` that CLIP scores highest (0: no reranking; None: the
                recorded default, none unless the pipeline records one).
            image: priming image; its first `num_prime_rows` rows of codes are kept.
            num_prime_rows: rows of the (first level's) code grid taken from `image`.
            output_type: "pil", "np" (N, H, W, 3 floats in [0, 1]) or "pt" (N, 3, H, W).
            callback_on_step_end: called as f(pipe, step, code_index, {"codes": (N, i+1)})
                after each code, as diffusers calls it after each denoising step; the dict
                it returns may change the newest code.
            callback_on_step_end_tensor_inputs: the tensors it gets (["codes"]).
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).

        Returns:
            `.images`, prompt by prompt, `num_images_per_prompt` each (best first when
            reranked), and `.settings`, the `DALLESampling` the call used.
        """
        settings = DALLESampling.resolve(
            self.sampling_defaults,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            rerank=rerank,
        )
        self.callback_names(callback_on_step_end_tensor_inputs)  # checked before drawing
        settings, prompts, draws, generator = self.start_call(
            prompt, num_images_per_prompt, settings, rerank, generator, output_type
        )
        prime = self.prime_codes(self.prior, image, num_prime_rows, len(prompts) * draws)
        # 1. the caption (and the negative prompt), as the prior reads it
        cond = self.encode_prompt(prompts, draws, negative_list(negative_prompt, prompts))
        # 2. the prior draws the codes, 3. the tokenizer decodes them
        codes = self.sample_codes(
            self.prior, cond, settings, generator, prime, callback_on_step_end
        )
        images = self.decode_codes(self.prior, codes)
        # 4. CLIP keeps each prompt's best candidates
        if settings.rerank:
            images = self.rerank(images, prompts, draws, num_images_per_prompt)
        return self.output(images, output_type, return_dict, settings)

    def encode_prompt(
        self, prompts: list[str], draws: int, negatives: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The prior's condition for every image (`caption_condition`)."""
        return self.caption_condition(self.prior, prompts, draws, negatives)


def check_prior(prior: DALLEPrior) -> None:
    """A ValueError unless the prior reads the caption (not an image embedding)."""
    if "image_embeds" in prior.reads:
        raise ValueError(
            "prior reads a CLIP image embedding (text_encoder='clip_image'): that is "
            "unCLIP's decoder; the DALL-E prior reads the caption"
        )
