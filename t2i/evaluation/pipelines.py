"""The shapes suite for a saved pipeline: each route's prompt fidelity under named sampling
settings on one-object, two-object (relation) and held-out prompt sets, with the speed each
setting runs at; and the unCLIP route's own measures (the diffusion prior's embeddings
against the text embeddings, and the judge's agreement of variations with their source).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from t2i.data.shapes import ShapesDataset, render_spec, to_tensor
from t2i.evaluation.judge import judge_many
from t2i.evaluation.models import TEST_SEED, loader

logger = logging.getLogger(__name__)

# name -> the route's call arguments; rerank: candidates drawn per image kept; a setting left
# out is the pipeline's recorded one
PIPELINE_SETTINGS: dict[str, dict[str, Any]] = {  # the DALL-E route
    "plain": dict(guidance_scale=1.0, temperature=1.0, rerank=0),
    "guidance": dict(guidance_scale=3.0, temperature=1.0, rerank=0),
    "rerank": dict(guidance_scale=1.0, temperature=1.0, rerank=4),
    "guidance_rerank": dict(guidance_scale=3.0, temperature=1.0, rerank=4),
    # the sampling settings the pipeline records (`sampling_defaults`), without reranking
    "defaults": dict(rerank=0),
    "defaults_rerank": dict(rerank=4),
    "recorded": {},  # what a call that names no setting draws (a recorded rerank included)
}
UNCLIP_SETTINGS: dict[str, dict[str, Any]] = {  # the unCLIP route, when a pipeline has it
    "unclip_plain": dict(
        decoder_guidance_scale=1.0,
        decoder_temperature=1.0,
        prior_guidance_scale=1.0,
        prior_candidates=1,
    ),
    "unclip_guidance": dict(
        decoder_guidance_scale=3.0,
        decoder_temperature=1.0,
        prior_guidance_scale=4.0,
        prior_candidates=1,
    ),
    "unclip_defaults": {},  # the recorded settings, decoder's and prior's
    "unclip_defaults_rerank": dict(rerank=4),
}
LDM_SETTINGS: dict[str, dict[str, Any]] = {  # the latent diffusion route, when it is there
    "ldm_plain": dict(guidance_scale=1.0),
    "ldm_defaults": {},  # the recorded guidance, steps and sampler
    "ldm_defaults_rerank": dict(rerank=4),
    **{f"ldm_steps_{n}": dict(num_inference_steps=n) for n in (5, 10, 20, 50)},
    **{f"ldm_guidance_{g}": dict(guidance_scale=float(g)) for g in (2, 3, 5, 8)},
}
MASKGIT_SETTINGS: dict[str, dict[str, Any]] = {  # the masked route, when it is there
    "maskgit_plain": dict(guidance_scale=1.0, temperature=1.0),
    "maskgit_defaults": {},  # the recorded guidance, temperature and steps
    "maskgit_defaults_rerank": dict(rerank=4),
    **{f"maskgit_steps_{n}": dict(num_inference_steps=n) for n in (4, 8, 12, 16, 24)},
    **{f"maskgit_guidance_{g}": dict(guidance_scale=float(g)) for g in (1, 2, 3, 5)},
    **{f"maskgit_temperature_{t}": dict(temperature=t) for t in (0.5, 0.7, 1.0)},
    # the Gumbel noise on which codes a step keeps (MaskGIT's 4.5, aMUSEd's 2)
    **{f"maskgit_choice_{c}": dict(choice_temperature=c) for c in (0.5, 2.0, 4.5)},
}
ROUTE_SETTINGS = {
    "dalle": PIPELINE_SETTINGS,
    "unclip": UNCLIP_SETTINGS,
    "ldm": LDM_SETTINGS,
    "maskgit": MASKGIT_SETTINGS,
}


def route_of(setting: str) -> str:
    """The route a named setting samples."""
    return next(route for route, table in ROUTE_SETTINGS.items() if setting in table)


def pipeline_prompt_sets(
    size: int, n: int, holdout: list | None = None
) -> dict[str, tuple[list[str], list[dict]]]:
    """Test captions and specs: one-object, two-object (relation) and held-out combinations."""
    sets = test_sets(size, n, holdout)
    out = {}
    for name, data in sets.items():
        samples = [data[i] for i in range(n)]
        out[name] = ([s["caption"] for s in samples], [s["spec"] for s in samples])
    return out


@torch.no_grad()
def evaluate_pipeline(
    bundle: Any,
    n: int = 200,
    images_per_prompt: int = 4,
    batch_size: int = 50,
    seed: int = 0,
    holdout: list | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A text-to-image pipeline's prompt fidelity under each sampling setting.

    Args:
        bundle: a `TextToImagePipeline` (each setting runs on its route's pipeline).
        n: test prompts per prompt set.
        images_per_prompt: images judged per prompt.
        batch_size: prompts per pipeline call.
        seed: seeds each setting's generator.
        holdout: the combinations its prior never saw in training.
        settings: names of `PIPELINE_SETTINGS` and `UNCLIP_SETTINGS` (default: every one of
            the routes the bundle has); a `rerank` there is the candidates drawn per kept
            image.

    Each setting reports the settings it sampled at (as the route resolved them), its wall
    time and the images per second it returned.
    """
    bundle.set_progress_bar_config(disable=True)
    size = bundle.image_size
    sets = pipeline_prompt_sets(size, n, holdout)
    results: dict[str, Any] = {"prompts": n, "images_per_prompt": images_per_prompt}
    if settings is None:
        settings = [name for route in bundle.routes for name in ROUTE_SETTINGS[route]]
    routes = {route: bundle.route(route) for route in {route_of(name) for name in settings}}
    for name in settings:
        pipe = routes[route_of(name)]
        kwargs = dict(ROUTE_SETTINGS[route_of(name)][name])
        if kwargs.get("rerank"):
            kwargs["rerank"] *= images_per_prompt
        results[name] = {"route": route_of(name)}
        start = time.perf_counter()
        for set_name, (captions, specs) in sets.items():
            generator = torch.Generator().manual_seed(seed)
            images = []
            for i in range(0, n, batch_size):
                out = pipe(
                    captions[i : i + batch_size],
                    num_images_per_prompt=images_per_prompt,
                    generator=generator,
                    output_type="pt",
                    **kwargs,
                )
                images.extend(out.images * 2 - 1)
                results[name]["settings"] = out.settings.as_dict()
            repeated = [spec for spec in specs for _ in range(images_per_prompt)]
            results[name][set_name] = judge_many(images, repeated)
        seconds = time.perf_counter() - start  # sampling and judging; judging is ~1 ms/image
        results[name]["seconds"] = seconds
        results[name]["images_per_s"] = len(sets) * n * images_per_prompt / seconds
        logger.info("pipeline %s: %s", name, {k: v for k, v in results[name].items()})
    return results


def test_sets(size: int, n: int, holdout: list | None) -> dict[str, ShapesDataset]:
    """The test images of the pipeline prompt sets (the same captions and specs)."""
    sets = {
        "one_object": ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=1),
        "two_objects": ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=2),
    }
    if holdout:
        sets["holdout"] = ShapesDataset(
            n=n, seed=TEST_SEED, size=size, num_objects=1, holdout=holdout, split="holdout"
        )
    return sets


@torch.no_grad()
def evaluate_unclip(
    pipe: Any,
    n: int = 200,
    variations: int = 4,
    batch_size: int = 50,
    seed: int = 0,
    holdout: list | None = None,
    prior_guidance_scale: float | None = None,
    guidance_scale: float | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The unCLIP route's own measures on test images of the shapes world.

    - embeddings, per prompt set: the mean cosine between the true CLIP image embedding of
      a test image and (a) the diffusion prior's embedding for its caption, (b) the
      caption's text embedding; the prior should land closer than the text does;
    - variations of one-object test images (`variations` each, the image's own CLIP
      embedding decoded): the judge's agreement with the source image's spec.

    Args:
        pipe: an `UnCLIPPipeline`.
        n: test images per prompt set.
        variations: variations judged per source image.
        batch_size: images per call.
        seed: seeds the generator.
        holdout: the combinations its stages never saw in training.
        prior_guidance_scale: guidance of the diffusion prior.
        guidance_scale: guidance of the decoder.
        temperature: temperature of the decoder (these three: None is the pipeline's
            recorded setting, what `pipe(...)` and `pipe.variations` use).
    """
    pipe.set_progress_bar_config(disable=True)
    prior = pipe.settings(prior_guidance_scale=prior_guidance_scale)
    sets = test_sets(pipe.image_tokenizer.config.image_size, n, holdout)
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, Any] = {"embeddings": {}}
    for name, data in sets.items():
        prior_cos, text_cos, other_cos = [], [], []
        for batch in loader(data, batch_size, pipe.clip.config.context_length, pipe.clip.tokenizer):
            true = pipe.clip.encode_image(batch["pixel_values"].to(pipe.device)).float()
            start = len(other_cos) * batch_size  # this batch's first sample in the set
            other = another_image(batch["spec"], batch["pixel_values"].shape[-1], start)
            other_cos.append((pipe.clip.encode_image(other.to(pipe.device)) * true).sum(-1).cpu())
            text = pipe.clip.text_features(batch["input_ids"].to(pipe.device))
            drawn = pipe.diffusion_prior.sample(
                text.embeds,
                text.states,
                prior.prior_guidance_scale,
                num_inference_steps=prior.num_inference_steps,
                generator=generator,
                num_candidates=prior.prior_candidates,
            )
            prior_cos.append((drawn * true).sum(-1).cpu())
            text_cos.append((text.embeds.float() * true).sum(-1).cpu())
        prior_c, text_c = torch.cat(prior_cos), torch.cat(text_cos)
        results["embeddings"][name] = {
            "cosine_prior_to_image": prior_c.mean().item(),
            "cosine_text_to_image": text_c.mean().item(),
            "prior_closer": (prior_c > text_c).float().mean().item(),
            # what a perfect prior lands at: an image that fits the caption, not this one
            "cosine_another_image_to_image": torch.cat(other_cos).float().mean().item(),
        }
    results["variations"] = variation_agreement(
        pipe, sets["one_object"], variations, batch_size, guidance_scale, generator, temperature
    )
    return results


def another_image(specs: list[dict], size: int, start: int) -> torch.Tensor:
    """Another image (N, 3, S, S) of each spec: what its caption states, the rest (size,
    cell, layout) drawn anew, seeded by the sample's place in its set."""
    return torch.stack(
        [to_tensor(render_spec(spec, size, seed=start + i)) for i, spec in enumerate(specs)]
    )


@torch.no_grad()
def variation_agreement(
    pipe: Any,
    data: ShapesDataset,
    variations: int = 4,
    batch_size: int = 50,
    guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Decode each test image's own CLIP image embedding `variations` times (unCLIP's
    variations) and return the judge's agreement with the image's spec, and the decoding
    speed (`images_per_s`, the CLIP image encoder included). A guidance_scale or temperature
    of None (the decoder's) is the pipeline's recorded one."""
    settings = pipe.settings(decoder_guidance_scale=guidance_scale, decoder_temperature=temperature)
    images, specs = [], []
    start = time.perf_counter()
    for batch in loader(data, batch_size, pipe.clip.config.context_length):
        embeds = pipe.clip.encode_image(batch["pixel_values"].to(pipe.device))
        repeated = embeds.repeat_interleave(variations, 0)
        images.extend(pipe.decode_embeddings(repeated, settings, generator))
        specs += [spec for spec in batch["spec"] for _ in range(variations)]
    seconds = time.perf_counter() - start
    return {
        "per_image": variations,
        **judge_many(images, specs),
        "images_per_s": len(images) / seconds,
    }
