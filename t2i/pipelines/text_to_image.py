"""TextToImagePipeline: prompt -> images, a diffusers `DiffusionPipeline` over t2i's models.

The DALL-E route (Ramesh et al. 2021), stage by stage: CLIP tokenises the prompts (and, for
a prior that reads CLIP's token states, encodes them); the prior draws image codes one at a
time with classifier-free guidance; the image tokenizer decodes the codes to pixels; CLIP
scores the candidates against their prompt and keeps the best (reranking).

The unCLIP route (Ramesh et al. 2022), when the pipeline holds its two stages: CLIP encodes
the prompts; the diffusion prior turns each text embedding into an image embedding; the
decoder (an autoregressive prior reading that embedding) draws the codes, then as above; or a
pixel diffusion decoder (`DiffusionDecoder`) draws the image itself.
The same two stages give variations of an image (its CLIP embedding decoded again) and
interpolations between prompts (their image embeddings joined along the great circle).

A saved pipeline is a directory with `model_index.json` and a folder per component (`clip`,
`image_tokenizer`, `prior`; `diffusion_prior` and `decoder` when it has the unCLIP route).
`model_index.json` also records the t2i version and the pipeline format; `from_pretrained`
refuses a directory whose format it cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from t2i.models.clip import CLIPModel, clip_score
from t2i.models.diffusion_decoder import DiffusionDecoder
from t2i.models.diffusion_prior import DiffusionPrior
from t2i.models.prior import DALLEPrior
from t2i.models.tokenizer import ImageTokenizer

FORMAT = 1  # bump when a saved pipeline's layout changes incompatibly
# unless a pipeline records its own: guidance_scale and temperature are the DALL-E prior's,
# prior_guidance_scale the unCLIP diffusion prior's, decoder_* the unCLIP decoder's, and
# num_inference_steps the denoising steps of the diffusion prior (and of a pixel decoder),
# prior_candidates its draws per image (the one closest to the text embedding is kept)
SAMPLING = {
    "guidance_scale": 3.0,
    "temperature": 1.0,
    "prior_guidance_scale": 1.0,
    "decoder_guidance_scale": 3.0,
    "decoder_temperature": 1.0,
    "num_inference_steps": 25,
    "prior_candidates": 1,
}
OUTPUT_TYPES = ("pil", "np", "pt")
ROUTES = ("dalle", "unclip")


class PipelineFormatError(ValueError):
    """A directory that is not a t2i pipeline this version can load."""


class TextToImagePipeline(DiffusionPipeline):
    """Text -> images through CLIP, an autoregressive prior over image codes and a tokenizer.

    Args:
        clip: the CLIP model; owns the text tokenizer, conditions the prior ("clip" text
            encoder) and reranks candidates.
        image_tokenizer: the tokenizer whose codes the prior draws (DiscreteVAE, VQVAE, VQVAE2).
        prior: the `DALLEPrior` of the DALL-E route (reads the caption).
        diffusion_prior: unCLIP's `DiffusionPrior` (text embedding -> image embedding).
        decoder: unCLIP's decoder: a `DALLEPrior` with text_encoder="clip_image" (over the
            tokenizer's codes) or a `DiffusionDecoder` (over pixels).
    """

    model_cpu_offload_seq = "clip->prior->image_tokenizer"
    _optional_components = ["diffusion_prior", "decoder"]

    def __init__(
        self,
        clip: CLIPModel,
        image_tokenizer: ImageTokenizer,
        prior: DALLEPrior,
        diffusion_prior: DiffusionPrior | None = None,
        decoder: DALLEPrior | DiffusionDecoder | None = None,
    ):
        super().__init__()
        if (diffusion_prior is None) != (decoder is None):
            raise ValueError("the unCLIP route needs both a diffusion_prior and a decoder")
        if isinstance(decoder, DALLEPrior) and decoder.config.text_encoder != "clip_image":
            raise ValueError(
                f"decoder reads text_encoder={decoder.config.text_encoder!r}; unCLIP's decoder "
                "reads a CLIP image embedding (text_encoder='clip_image')"
            )
        self.register_modules(
            clip=clip,
            image_tokenizer=image_tokenizer,
            prior=prior,
            diffusion_prior=diffusion_prior,
            decoder=decoder,
        )
        # what a call without guidance_scale / temperature uses; a saved pipeline records the
        # values its builder measured best (model_index.json, "_t2i_sampling")
        self.sampling_defaults = dict(SAMPLING)

    @property
    def has_unclip(self) -> bool:
        """Whether this pipeline holds the unCLIP route's two stages."""
        return self.decoder is not None

    # ---- saving and loading ----------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """diffusers' save, then the t2i version and format recorded in model_index.json."""
        super().save_pretrained(save_directory, **kwargs)
        from t2i import __version__

        index = Path(save_directory) / "model_index.json"
        config = json.loads(index.read_text())
        config.update(
            {
                "_t2i_version": __version__,
                "_t2i_format": FORMAT,
                "_t2i_sampling": self.sampling_defaults,
            }
        )
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, torch_dtype: torch.dtype | None = None
    ) -> TextToImagePipeline:
        """Load a saved pipeline directory, after checking that it is one this t2i can read.

        Each component loads through `t2i.models.load_model` (by the class its config.json
        names), so any t2i tokenizer or prior can fill its slot.

        Args:
            pretrained_model_name_or_path: the directory `save_pretrained` wrote.
            torch_dtype: cast the weights to this dtype (None: as saved).

        Raises:
            FileNotFoundError: no such directory, no model_index.json, or a missing component.
            PipelineFormatError: not a t2i pipeline, or one of another format.
        """
        from t2i.models import load_model

        path = Path(pretrained_model_name_or_path)
        index = check_pipeline_dir(path)
        components = {}
        for name in saved_components(index):
            if not (path / name / "config.json").is_file():
                raise FileNotFoundError(f"{path}: component {name!r} missing ({path / name})")
            components[name] = load_model(path / name, torch_dtype=torch_dtype).eval()
        pipe = cls(**components)
        pipe.sampling_defaults.update(index.get("_t2i_sampling") or {})
        return pipe

    # ---- generation ------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int = 4,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
        rerank: int | None = None,
        image: Image.Image | torch.Tensor | None = None,
        num_prime_rows: int = 0,
        output_type: str = "pil",
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        return_dict: bool = True,
        route: str = "dalle",
        prior_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        prior_candidates: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate images for one prompt or a list of prompts.

        Args:
            prompt: the caption(s).
            num_images_per_prompt: images returned per prompt.
            generator: the source of randomness (a seed gives the same images).
            temperature: softmax temperature of the prior (0 = greedy); None: the
                pipeline's `sampling_defaults` (1.0 unless it records another; on the
                unCLIP route its `decoder_temperature`).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            guidance_scale: classifier-free guidance; 1 turns it off; None: the pipeline's
                `sampling_defaults` (3.0 unless it records another; on the unCLIP route its
                `decoder_guidance_scale`).
            rerank: draw this many candidates per prompt and keep the
                `num_images_per_prompt` that CLIP scores highest (None: no reranking).
            image: priming image; its first `num_prime_rows` rows of codes are kept.
            num_prime_rows: rows of the (first level's) code grid taken from `image`.
            output_type: "pil", "np" (N, H, W, 3 floats in [0, 1]) or "pt" (N, 3, H, W).
            callback_on_step_end: called as f(pipe, step, code_index, {"codes": (N, i+1)})
                after each code, as diffusers calls it after each denoising step.
            return_dict: an `ImagePipelineOutput` (True) or a tuple (images,).
            route: "dalle" (the prior reads the caption) or "unclip" (the diffusion prior
                draws an image embedding, which the decoder reads; `guidance_scale`,
                `temperature`, `top_k` and `top_p` then apply to the decoder).
            prior_guidance_scale: guidance of the diffusion prior ("unclip"); None: the
                pipeline's `sampling_defaults` (1.0 unless it records another).
            num_inference_steps: denoising steps of the diffusion prior ("unclip"), and of
                a pixel decoder; None: the pipeline's `sampling_defaults` (25 unless it
                records another).
            prior_candidates: image embeddings drawn per image, the one closest to the text
                embedding kept ("unclip"; DALL-E 2 keeps the best of 2); None: the
                pipeline's `sampling_defaults` (1 unless it records another).

        Returns:
            `.images`, prompt by prompt, `num_images_per_prompt` each (best first when
            reranked).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        model = self._route_model(route)
        draws = self._check(prompts, num_images_per_prompt, rerank, output_type, num_prime_rows)
        prime = self.prime_codes(image, num_prime_rows, len(prompts) * draws)
        sampling = (guidance_scale, temperature, top_k, top_p, generator)
        if route == "dalle":
            cond = self.encode_prompt(prompts, draws)
            codes = self.sample_codes(model, cond, *sampling, prime, callback_on_step_end)
            images = self.decode_codes(model, codes)
        else:
            embeds = self.image_embeddings(
                prompts,
                draws,
                prior_guidance_scale,
                num_inference_steps,
                prior_candidates,
                generator,
            )
            images = self.decode_embeddings(
                embeds, *sampling, prime, callback_on_step_end, num_inference_steps
            )
        if rerank is not None:
            images = self.rerank(images, prompts, draws, num_images_per_prompt)
        return self._output(images, output_type, return_dict)

    def resolve_sampling(
        self, guidance_scale: float | None, temperature: float | None, stage: str = "prior"
    ) -> tuple[float, float]:
        """The guidance scale and temperature a call uses for the DALL-E prior (stage
        "prior") or the unCLIP decoder ("decoder"): None is the pipeline's
        `sampling_defaults` (what its builder recorded, or the library's)."""
        if stage not in ("prior", "decoder"):
            raise ValueError(f"stage={stage!r}: use 'prior' or 'decoder'")
        key = "" if stage == "prior" else "decoder_"
        return (
            self.recorded(f"{key}guidance_scale", guidance_scale),
            self.recorded(f"{key}temperature", temperature),
        )

    def recorded(self, name: str, value: Any = None) -> Any:
        """A sampling setting as a call uses it: `value`, or when that is None the pipeline's
        `sampling_defaults[name]` (what its builder recorded, or the library's)."""
        return self.sampling_defaults[name] if value is None else value

    def _route_model(self, route: str) -> DALLEPrior | DiffusionDecoder:
        """The model that draws the images' codes (or pixels) on a route."""
        if route not in ROUTES:
            raise ValueError(f"route={route!r}: use one of {ROUTES}")
        if route == "unclip" and not self.has_unclip:
            raise ValueError(
                "route='unclip' needs a pipeline with a diffusion_prior and a decoder; this "
                "one has the DALL-E route only"
            )
        return self.prior if route == "dalle" else self.decoder

    def decode_codes(self, model: DALLEPrior, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, image_len) -> images (N, 3, H, W) in [-1, 1]."""
        return self.image_tokenizer.decode(model.unflatten(codes)).float().clamp(-1, 1)

    def _output(self, images: torch.Tensor, output_type: str, return_dict: bool) -> Any:
        """The call's result in the asked form."""
        images = to_output(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _check(
        self, prompts: list[str], n: int, rerank: int | None, output_type: str, prime_rows: int
    ) -> int:
        """Validate the call's arguments; return the candidates drawn per prompt."""
        if not prompts:
            raise ValueError("no prompt given")
        if n < 1:
            raise ValueError(f"num_images_per_prompt={n} must be >= 1")
        if rerank is not None and rerank < n:
            raise ValueError(f"rerank={rerank} candidates cannot yield {n} images per prompt")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: use one of {OUTPUT_TYPES}")
        rows = self.prior.grids[0]
        if not 0 <= prime_rows < rows:
            raise ValueError(f"num_prime_rows={prime_rows} must be in [0, {rows})")
        return n if rerank is None else rerank

    def encode_prompt(self, prompts: list[str], draws: int) -> dict[str, torch.Tensor]:
        """The prior's condition for every image: input_ids and, for a prior that reads
        CLIP's token states, text_states; each prompt repeated `draws` times."""
        ids = self.clip.tokenize(prompts).to(self.device)
        if ids.shape[1] != self.prior.config.context_length:
            raise ValueError(
                f"CLIP tokenises to {ids.shape[1]} tokens; the prior reads "
                f"{self.prior.config.context_length}"
            )
        cond = {"input_ids": ids}
        if self.prior.config.text_encoder == "clip":
            cond["text_states"] = self.clip.text_features(ids).states
        return {k: v.repeat_interleave(draws, dim=0) for k, v in cond.items()}

    def image_embeddings(
        self,
        prompts: list[str],
        draws: int,
        guidance_scale: float | None,
        num_inference_steps: int | None,
        candidates: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """unCLIP's first stage: one CLIP image embedding per image to draw, (N * draws, D),
        from the diffusion prior reading each prompt's text embedding and token states
        (a None setting: the pipeline's recorded one)."""
        ids = self.clip.tokenize(prompts).to(self.device)
        text = self.clip.text_features(ids)
        return self.diffusion_prior.sample(
            text.embeds.repeat_interleave(draws, dim=0),
            text.states.repeat_interleave(draws, dim=0),
            guidance_scale=self.recorded("prior_guidance_scale", guidance_scale),
            num_inference_steps=self.recorded("num_inference_steps", num_inference_steps),
            generator=generator,
            num_candidates=self.recorded("prior_candidates", candidates),
        )

    def prime_codes(self, image: Any, rows: int, n: int) -> torch.Tensor | None:
        """The first `rows` rows of codes of `image`, for each of n images (or None)."""
        if image is None or rows == 0:
            if image is not None:
                raise ValueError("an image was given to prime with but num_prime_rows=0")
            return None
        x = image_tensor(image, self.image_tokenizer.config.image_size).to(self.device)
        codes = self.prior.flatten(self.image_tokenizer.encode(x))  # (1, image_len)
        return codes[:, : rows * self.prior.grids[0]].expand(n, -1)

    def sample_codes(
        self,
        model: DALLEPrior,
        cond: dict[str, torch.Tensor],
        guidance_scale: float | None,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        prime: torch.Tensor | None,
        callback_on_step_end: Callable | None,
    ) -> torch.Tensor:
        """The prior's (or decoder's) sampling loop under a progress bar: (N, image_len);
        a guidance_scale or temperature of None is the pipeline's `sampling_defaults` for
        that model."""
        stage = "decoder" if model is self.decoder else "prior"
        guidance_scale, temperature = self.resolve_sampling(guidance_scale, temperature, stage)
        start = 0 if prime is None else prime.shape[1]
        with self.progress_bar(total=model.image_len - start) as bar:

            def step(i: int, codes: torch.Tensor) -> None:
                bar.update()
                if callback_on_step_end is not None:
                    callback_on_step_end(self, i - start, i, {"codes": codes})

            return model.sample(
                cond.get("input_ids"),
                cond.get("text_states"),
                image_embeds=cond.get("image_embeds"),
                guidance_scale=guidance_scale,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                prime=prime,
                callback=step,
            )

    def rerank(
        self, images: torch.Tensor, prompts: list[str], draws: int, keep: int
    ) -> torch.Tensor:
        """Each prompt's `keep` best of its `draws` candidates by CLIP score, best first."""
        groups = images.view(len(prompts), draws, *images.shape[1:])
        best = []
        for prompt, group in zip(prompts, groups, strict=True):
            scores = clip_score(self.clip, group, [prompt])[:, 0]  # (draws,)
            best.append(group[scores.argsort(descending=True)[:keep]])
        return torch.cat(best)

    # ---- unCLIP's variations and interpolations ---------------------------------------------

    @torch.no_grad()
    def variations(
        self,
        image: Image.Image | torch.Tensor,
        num_images: int = 4,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Variations of an image: its CLIP image embedding, decoded `num_images` times.

        Args:
            image: a PIL image or a (3, H, W) tensor in [-1, 1].
            num_images: variations drawn.
            generator: the source of randomness.
            guidance_scale: classifier-free guidance of the decoder (None: the pipeline's
                `sampling_defaults["decoder_guidance_scale"]`).
            temperature: softmax temperature of the decoder (None: its
                `decoder_temperature`).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            output_type: "pil", "np" or "pt".
            return_dict: an `ImagePipelineOutput` (True) or a tuple (images,).
        """
        self._route_model("unclip")
        self._check(["image"], num_images, None, output_type, 0)
        x = image_tensor(image, self.image_tokenizer.config.image_size).to(self.device)
        embeds = self.clip.encode_image(x).repeat_interleave(num_images, dim=0)
        sampling = (guidance_scale, temperature, top_k, top_p, generator)
        images = self.decode_embeddings(embeds, *sampling)
        return self._output(images, output_type, return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        prompt_a: str,
        prompt_b: str,
        steps: int = 5,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        prior_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Images from prompt_a to prompt_b: the diffusion prior's image embedding of each
        prompt, joined along the great circle (slerp) in `steps` points, each decoded.

        Args:
            prompt_a: the first image's caption.
            prompt_b: the last image's caption.
            steps: images from first to last (>= 2).
            generator: the source of randomness.
            guidance_scale: classifier-free guidance of the decoder (None: the pipeline's
                `sampling_defaults["decoder_guidance_scale"]`).
            temperature: softmax temperature of the decoder (None: its
                `decoder_temperature`).
            top_k: sample among the k most likely codes.
            top_p: sample within the nucleus of probability top_p.
            prior_guidance_scale: guidance of the diffusion prior (None: the pipeline's
                `sampling_defaults`).
            num_inference_steps: denoising steps of the diffusion prior (None: the
                pipeline's `sampling_defaults`).
            output_type: "pil", "np" or "pt".
            return_dict: an `ImagePipelineOutput` (True) or a tuple (images,).
        """
        self._route_model("unclip")
        if steps < 2:
            raise ValueError(f"steps={steps}: an interpolation needs at least its two ends")
        self._check([prompt_a, prompt_b], 1, None, output_type, 0)
        ends = self.image_embeddings(
            [prompt_a, prompt_b], 1, prior_guidance_scale, num_inference_steps, None, generator
        )
        embeds = slerp(ends[0], ends[1], torch.linspace(0, 1, steps, device=ends.device))
        sampling = (guidance_scale, temperature, top_k, top_p, generator)
        images = self.decode_embeddings(embeds, *sampling)
        return self._output(images, output_type, return_dict)

    def decode_embeddings(
        self,
        embeds: torch.Tensor,
        guidance_scale: float | None,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        prime: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        num_inference_steps: int | None = None,
    ) -> torch.Tensor:
        """unCLIP's second stage: CLIP image embeddings (N, D) -> images (N, 3, H, W).

        A decoder over codes (`DALLEPrior`) samples with guidance_scale, temperature, top_k,
        top_p, the primed codes and the callback; a pixel decoder (`DiffusionDecoder`)
        denoises in `num_inference_steps` (None: the recorded default) with guidance_scale
        and has no codes to prime.
        """
        if isinstance(self.decoder, DiffusionDecoder):
            if prime is not None:
                raise ValueError(
                    "priming completes code rows; this pipeline's decoder draws pixels"
                )
            return self.decoder.sample(
                embeds.to(self.device),
                guidance_scale=self.resolve_sampling(guidance_scale, None, "decoder")[0],
                num_inference_steps=self.recorded("num_inference_steps", num_inference_steps),
                generator=generator,
            )
        cond = {"image_embeds": embeds}
        sampling = (guidance_scale, temperature, top_k, top_p, generator)
        codes = self.sample_codes(self.decoder, cond, *sampling, prime, callback_on_step_end)
        return self.decode_codes(self.decoder, codes)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of a and b (D,) at fractions t (T,):
    unit vectors (T, D), a at t = 0 and b at t = 1 (Shoemake 1985)."""
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum().clamp(-1.0, 1.0))
    if omega < 1e-4:  # (nearly) the same direction
        return a.expand(len(t), -1).clone()
    weights = torch.stack([torch.sin((1 - t) * omega), torch.sin(t * omega)], dim=1)  # (T, 2)
    return weights @ torch.stack([a, b]) / torch.sin(omega)


def saved_components(index: dict) -> list[str]:
    """The components a saved pipeline holds, by its model_index.json: clip, image_tokenizer,
    prior, and the optional ones (the unCLIP route's) that it records."""
    optional = TextToImagePipeline._optional_components
    present = [name for name in optional if (index.get(name) or [None])[0] is not None]
    return ["clip", "image_tokenizer", "prior", *present]


def check_pipeline_dir(path: str | Path) -> dict:
    """model_index.json of a saved t2i pipeline this version reads; a clear error otherwise.

    Args:
        path: a pipeline directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such pipeline directory")
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no model_index.json; not a saved pipeline")
    config = json.loads(index.read_text())
    if config.get("_class_name") != TextToImagePipeline.__name__ or "_t2i_format" not in config:
        raise PipelineFormatError(
            f"{index}: _class_name={config.get('_class_name')!r} with no _t2i_format; "
            "not a pipeline saved by t2i's TextToImagePipeline"
        )
    if config["_t2i_format"] != FORMAT:
        raise PipelineFormatError(
            f"{index}: pipeline format {config['_t2i_format']} (saved by t2i "
            f"{config.get('_t2i_version', '?')}); this t2i reads format {FORMAT}"
        )
    return config


def image_tensor(image: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """A PIL image or a (3, H, W) / (1, 3, H, W) tensor in [-1, 1] -> (1, 3, size, size)."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), np.float32)
        return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0
    x = image[None] if image.dim() == 3 else image
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bicubic")
    return x.float()


def to_output(images: torch.Tensor, output_type: str) -> Any:
    """Images (N, 3, H, W) in [-1, 1] as PIL images, a numpy array or a tensor in [0, 1]."""
    x = (images + 1) / 2
    if output_type == "pt":
        return x.cpu()
    array = x.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]
