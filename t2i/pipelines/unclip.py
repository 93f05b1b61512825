"""UnCLIPPipeline: the unCLIP route (Ramesh et al. 2022), prompt -> image embedding -> images.

Stage by stage: CLIP encodes the prompts (text embedding and token states); the diffusion
prior turns each into a CLIP image embedding (the best of `prior_candidates` draws, by
cosine to the text embedding, as DALL-E 2 keeps the best of 2); the decoder draws an image
that has that embedding: an autoregressive prior over the tokenizer's codes (`DALLEPrior`
with text_encoder="clip_image"), decoded by the tokenizer, or a pixel diffusion decoder
(`DiffusionDecoder`); CLIP reranks the candidates.
The same two stages give variations of an image (its own CLIP embedding decoded again) and
interpolations between prompts (their image embeddings joined along the great circle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from PIL import Image

from t2i.models import CLIPModel, DALLEPrior, DiffusionDecoder, DiffusionPrior, ImageTokenizer
from t2i.pipelines.common import (
    CodeSampling,
    SamplingSettings,
    T2IPipeline,
    T2IPipelineOutput,
    image_tensor,
    negative_list,
)


@dataclass(frozen=True)
class UnCLIPSampling(SamplingSettings):
    """How the unCLIP route's two stages sample.

    Args:
        prior_guidance_scale: classifier-free guidance of the diffusion prior.
        num_inference_steps: denoising steps of the diffusion prior (and of a pixel decoder).
        prior_candidates: image embeddings drawn per image; the one closest to the text
            embedding is kept.
        decoder_guidance_scale: classifier-free guidance of the decoder.
        decoder_temperature: softmax temperature of a decoder over codes.
        top_k: a decoder over codes samples among the k most likely codes.
        top_p: ... within the nucleus of probability top_p.
        rerank: candidates drawn per prompt, of which CLIP keeps the best (None: no
            reranking).
    """

    RECORDED: ClassVar[tuple[str, ...]] = (
        "prior_guidance_scale",
        "num_inference_steps",
        "prior_candidates",
        "decoder_guidance_scale",
        "decoder_temperature",
    )

    prior_guidance_scale: float = 1.0
    num_inference_steps: int = 25
    prior_candidates: int = 1
    decoder_guidance_scale: float = 3.0
    decoder_temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    rerank: int | None = None

    def decoder(self) -> CodeSampling:
        """The settings a decoder over codes samples with."""
        return CodeSampling(
            self.decoder_guidance_scale, self.decoder_temperature, self.top_k, self.top_p
        )


class UnCLIPPipeline(T2IPipeline):
    """Text -> CLIP image embedding -> images.

    Args:
        clip: the CLIP model; encodes the prompts (and images, for variations) and reranks.
        image_tokenizer: the tokenizer a decoder over codes draws for (and whose image size
            the route works at).
        diffusion_prior: the `DiffusionPrior` (text embedding -> image embedding).
        decoder: a `DALLEPrior` with text_encoder="clip_image" (over the tokenizer's codes)
            or a `DiffusionDecoder` (over pixels).
    """

    ROUTE: ClassVar[str] = "unclip"

    model_cpu_offload_seq = "clip->diffusion_prior->decoder->image_tokenizer"
    settings_classes = (UnCLIPSampling,)

    def __init__(
        self,
        clip: CLIPModel,
        image_tokenizer: ImageTokenizer,
        diffusion_prior: DiffusionPrior,
        decoder: DALLEPrior | DiffusionDecoder,
    ):
        super().__init__()
        check_decoder(decoder)
        self.register_modules(
            clip=clip,
            image_tokenizer=image_tokenizer,
            diffusion_prior=diffusion_prior,
            decoder=decoder,
        )
        self._init_defaults()

    def settings(self, **given: Any) -> UnCLIPSampling:
        """A call's settings: those given, else the recorded ones, else the library's."""
        return UnCLIPSampling.resolve(self.sampling_defaults, **given)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        prior_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        prior_candidates: int | None = None,
        decoder_guidance_scale: float | None = None,
        decoder_temperature: float | None = None,
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
                (prompt by prompt; with `rerank`, one per candidate), as in diffusers; an
                image's generator draws its prior noise, then its decoder's samples.
            negative_prompt: what the diffusion prior's guidance steers away from, one per
                prompt or one for all: its unconditional branch reads the negative prompt's
                CLIP text embedding and states instead of the null condition (None); at
                prior guidance 1 it has no effect. The decoder reads image embeddings only.
            prior_guidance_scale: guidance of the diffusion prior; None (here and below): the
                pipeline's recorded setting (`sampling_defaults`), else the library's
                (`UnCLIPSampling`).
            num_inference_steps: denoising steps of the diffusion prior (and a pixel decoder).
            prior_candidates: image embeddings drawn per image, the closest to the text
                embedding kept.
            decoder_guidance_scale: classifier-free guidance of the decoder; 1 turns it off.
            decoder_temperature: softmax temperature of a decoder over codes.
            top_k: a decoder over codes samples among the k most likely codes.
            top_p: ... within the nucleus of probability top_p.
            rerank: draw this many candidates per prompt and keep the
                `num_images_per_prompt` that CLIP scores highest (None: no reranking).
            image: priming image for a decoder over codes; its first `num_prime_rows` rows
                of codes are kept.
            num_prime_rows: rows of the code grid taken from `image`.
            output_type: "pil", "np" (N, H, W, 3 floats in [0, 1]) or "pt" (N, 3, H, W).
            callback_on_step_end: called as f(pipe, step, code_index, {"codes": (N, i+1)})
                after each code of a decoder over codes; the dict it returns may change the
                newest code.
            callback_on_step_end_tensor_inputs: the tensors it gets (["codes"]).
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).

        Returns:
            `.images`, prompt by prompt (best first when reranked), and `.settings`, the
            `UnCLIPSampling` the call used.
        """
        settings = self.settings(
            prior_guidance_scale=prior_guidance_scale,
            num_inference_steps=num_inference_steps,
            prior_candidates=prior_candidates,
            decoder_guidance_scale=decoder_guidance_scale,
            decoder_temperature=decoder_temperature,
            top_k=top_k,
            top_p=top_p,
            rerank=rerank,
        )
        self.callback_names(callback_on_step_end_tensor_inputs)  # checked before drawing
        settings, prompts, draws, generator = self.start_call(
            prompt, num_images_per_prompt, settings, rerank, generator, output_type
        )
        negatives = negative_list(negative_prompt, prompts)
        prime = None
        if image is not None or num_prime_rows:
            prime = self.prime_codes(
                self._code_decoder(), image, num_prime_rows, len(prompts) * draws
            )
        # 1. the diffusion prior: each caption -> a CLIP image embedding per image to draw
        embeds = self.image_embeddings(prompts, draws, settings, generator, negatives)
        # 2. the decoder: each embedding -> an image that has it
        images = self.decode_embeddings(embeds, settings, generator, prime, callback_on_step_end)
        # 3. CLIP keeps each prompt's best candidates
        if settings.rerank:
            images = self.rerank(images, prompts, draws, num_images_per_prompt)
        return self.output(images, output_type, return_dict, settings)

    def image_embeddings(
        self,
        prompts: list[str],
        draws: int,
        settings: UnCLIPSampling,
        generator: torch.Generator | list[torch.Generator] | None,
        negatives: list[str] | None = None,
    ) -> torch.Tensor:
        """The first stage: one CLIP image embedding per image to draw, (N * draws, D), from
        the diffusion prior reading each prompt's text embedding and token states (guided
        away from its negative prompt's, one per prompt, when given)."""
        ids = self.clip.tokenize(prompts)
        if negatives:
            ids = torch.cat([ids, self.clip.tokenize(negatives, allow_empty=True)])
        text = self.clip.text_features(ids.to(self.device))
        embeds = text.embeds.repeat_interleave(draws, dim=0)
        states = text.states.repeat_interleave(draws, dim=0)
        rows = len(prompts) * draws
        return self.diffusion_prior.sample(
            embeds[:rows],
            states[:rows],
            guidance_scale=settings.prior_guidance_scale,
            num_inference_steps=settings.num_inference_steps,
            generator=generator,
            num_candidates=settings.prior_candidates,
            negative_embeds=embeds[rows:] if negatives else None,
            negative_states=states[rows:] if negatives else None,
        )

    def decode_embeddings(
        self,
        embeds: torch.Tensor,
        settings: UnCLIPSampling,
        generator: torch.Generator | list[torch.Generator] | None,
        prime: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
    ) -> torch.Tensor:
        """The second stage: CLIP image embeddings (N, D) -> images (N, 3, H, W) in [-1, 1].

        A decoder over codes samples at `settings.decoder()` (with the primed codes and the
        callback); a pixel decoder denoises in `num_inference_steps` at the decoder's
        guidance.
        """
        if "image_tokens" not in self.decoder.reads:  # a pixel decoder
            return self.decoder.sample(
                embeds.to(self.device),
                guidance_scale=settings.decoder_guidance_scale,
                num_inference_steps=settings.num_inference_steps,
                generator=generator,
            )
        cond = {"image_embeds": embeds}
        codes = self.sample_codes(
            self.decoder, cond, settings.decoder(), generator, prime, callback_on_step_end
        )
        return self.decode_codes(self.decoder, codes)

    def _code_decoder(self) -> DALLEPrior:
        """The decoder, when it draws codes (which priming completes)."""
        if "image_tokens" not in self.decoder.reads:
            raise ValueError("priming completes code rows; this pipeline's decoder draws pixels")
        return self.decoder

    # ---- variations and interpolations -----------------------------------------------------

    @torch.no_grad()
    def variations(
        self,
        image: Image.Image | torch.Tensor,
        num_images: int = 4,
        generator: torch.Generator | None = None,
        decoder_guidance_scale: float | None = None,
        decoder_temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> T2IPipelineOutput | tuple:
        """Variations of an image: its CLIP image embedding, decoded `num_images` times.

        Args:
            image: a PIL image or a (3, H, W) tensor in [-1, 1].
            num_images: variations drawn.
            generator: the source of randomness.
            decoder_guidance_scale: classifier-free guidance of the decoder (None: recorded).
            decoder_temperature: softmax temperature of the decoder (None: recorded).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            output_type: "pil", "np" or "pt".
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).
        """
        settings = self.settings(
            decoder_guidance_scale=decoder_guidance_scale,
            decoder_temperature=decoder_temperature,
            top_k=top_k,
            top_p=top_p,
        )
        self.check_call(["image"], num_images, None, output_type)
        x = image_tensor(image, self.image_tokenizer.config.image_size).to(self.device)
        embeds = self.clip.encode_image(x).repeat_interleave(num_images, dim=0)
        images = self.decode_embeddings(embeds, settings, generator)
        return self.output(images, output_type, return_dict, settings)

    @torch.no_grad()
    def interpolate(
        self,
        prompt_a: str,
        prompt_b: str,
        steps: int = 5,
        generator: torch.Generator | None = None,
        prior_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        decoder_guidance_scale: float | None = None,
        decoder_temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> T2IPipelineOutput | tuple:
        """Images from prompt_a to prompt_b: the diffusion prior's image embedding of each
        prompt, joined along the great circle (slerp) in `steps` points, each decoded.

        Args:
            prompt_a: the first image's caption.
            prompt_b: the last image's caption.
            steps: images from first to last (>= 2).
            generator: the source of randomness.
            prior_guidance_scale: guidance of the diffusion prior (None: recorded).
            num_inference_steps: denoising steps of the diffusion prior (None: recorded).
            decoder_guidance_scale: classifier-free guidance of the decoder (None: recorded).
            decoder_temperature: softmax temperature of the decoder (None: recorded).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            output_type: "pil", "np" or "pt".
            return_dict: a `T2IPipelineOutput` (True) or a tuple (images,).
        """
        if steps < 2:
            raise ValueError(f"steps={steps}: an interpolation needs at least its two ends")
        settings = self.settings(
            prior_guidance_scale=prior_guidance_scale,
            num_inference_steps=num_inference_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            decoder_temperature=decoder_temperature,
            top_k=top_k,
            top_p=top_p,
        )
        self.check_call([prompt_a, prompt_b], 1, None, output_type)
        ends = self.image_embeddings([prompt_a, prompt_b], 1, settings, generator)
        embeds = slerp(ends[0], ends[1], torch.linspace(0, 1, steps, device=ends.device))
        images = self.decode_embeddings(embeds, settings, generator)
        return self.output(images, output_type, return_dict, settings)


def check_decoder(decoder: DALLEPrior | DiffusionDecoder) -> None:
    """A ValueError unless the decoder reads a CLIP image embedding."""
    if "image_embeds" not in decoder.reads:
        raise ValueError(
            f"decoder reads {sorted(decoder.reads)}; unCLIP's decoder reads a CLIP image "
            "embedding (a DALLEPrior with text_encoder='clip_image', or a DiffusionDecoder)"
        )


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of a and b (D,) at fractions t (T,):
    unit vectors (T, D), a at t = 0 and b at t = 1 (Shoemake 1985)."""
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum().clamp(-1.0, 1.0))
    if omega < 1e-4:  # (nearly) the same direction
        return a.expand(len(t), -1).clone()
    weights = torch.stack([torch.sin((1 - t) * omega), torch.sin(t * omega)], dim=1)  # (T, 2)
    return weights @ torch.stack([a, b]) / torch.sin(omega)
