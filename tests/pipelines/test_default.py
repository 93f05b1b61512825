"""The default pipeline shipped in t2i/assets/default (built by scripts/build_default.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import check_shipped_weights, gen, load_script
from PIL import Image

import t2i
from t2i import DALLEPipeline, LatentDiffusionPipeline, TextToImagePipeline, UnCLIPPipeline
from t2i.data.shapes import CELLS, PALETTE, SHAPES, SIZES, caption_for, make_sample, render_spec
from t2i.evaluation import judge_many
from t2i.pipelines import DEFAULT_PIPELINE, MaskGITPipeline

# one object, every attribute stated: a scene drawn at random gets all four right this often
SPECS = [
    {"objects": [{"shape": "circle", "color": "red", "size": "large", "cell": "center"}]},
    {"objects": [{"shape": "square", "color": "blue", "size": "small", "cell": "top left"}]},
    {"objects": [{"shape": "triangle", "color": "green", "size": "large", "cell": "bottom right"}]},
]
SPECS = [{**spec, "relation": None} for spec in SPECS]
PROMPTS = [caption_for(spec) for spec in SPECS]  # "a large red circle in the center", ...
CHANCE = 1 / (len(PALETTE) * len(SHAPES) * len(SIZES) * len(CELLS))
N = 4  # images per prompt


@pytest.fixture(scope="module")
def bundle():
    """The shipped default, loaded once for this module (float32 on the CPU)."""
    pipe = TextToImagePipeline.from_pretrained(DEFAULT_PIPELINE, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def random_scenes():
    """One-object scenes of the shapes world (its test seed), as a prompt-blind draw would give."""
    return [make_sample(i, seed=1000, num_objects=1)["image"] for i in range(100)]


def check_fidelity(images: list, random_scenes: list, least: float = 0.5) -> None:
    """Images drawn N per prompt, prompt by prompt: each prompt's are judged right at least
    `least` of the time and 20 times more often than chance (what a scene drawn at random
    gets right, measured on the world's scenes, and no less than 1 in CHANCE), while the
    images drawn for the other prompts are judged right for it at most a quarter of the time
    (the judge tells the prompts apart: the images follow their own prompt)."""
    assert len(images) == N * len(SPECS)
    for i, spec in enumerate(SPECS):
        own = judge_many(images[i * N : (i + 1) * N], [spec] * N)["fidelity"]
        others = [im for j, im in enumerate(images) if j // N != i]
        crossed = judge_many(others, [spec] * len(others))["fidelity"]
        chance = judge_many(random_scenes, [spec] * len(random_scenes))["fidelity"]
        chance = max(chance, CHANCE)
        assert own >= least and own >= 20 * chance, (PROMPTS[i], own, chance)
        assert crossed <= 0.25, (PROMPTS[i], crossed)


def test_the_default_is_shipped_in_float16_within_the_budget():
    assert check_shipped_weights(DEFAULT_PIPELINE) <= 60 * 2**20  # its budget, 2^20-byte MiB


def test_the_default_draws_what_the_prompt_says_far_more_often_than_chance(random_scenes):
    pipe = t2i.load_pipeline(device="cpu")
    assert type(pipe) is DALLEPipeline  # the route load_pipeline gives unless told
    # the settings measured best for it (docs/RESULTS.md), used when a call names none
    recorded = json.loads((DEFAULT_PIPELINE / "model_index.json").read_text())["_t2i_sampling"]
    measured = load_script("build_default").SAMPLING
    assert recorded == {k: measured[k] for k in recorded}  # the build's table, as it ran
    assert {k: pipe.sampling_defaults[k] for k in recorded} == recorded
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS, num_images_per_prompt=N, generator=gen(0))
    assert out.settings.guidance_scale == 2.0 and out.settings.temperature == 0.7
    check_fidelity(out.images, random_scenes)


def test_the_default_carries_the_unclip_route_and_its_variations_keep_the_attributes(
    bundle, random_scenes
):
    assert bundle.routes == ["dalle", "unclip", "ldm", "maskgit"]
    pipe = t2i.load_pipeline(device="cpu", route="unclip")
    assert type(pipe) is UnCLIPPipeline
    pipe.set_progress_bar_config(disable=True)
    drawn = pipe(PROMPTS, num_images_per_prompt=N, generator=gen(0))
    assert drawn.settings.decoder_guidance_scale == 1.5 and drawn.settings.prior_candidates == 2
    check_fidelity(drawn.images, random_scenes)
    # each spec rendered, then varied: the variations keep what the source shows
    variations = []
    for i, spec in enumerate(SPECS):
        variations += pipe.variations(render_spec(spec), num_images=N, generator=gen(i)).images
    check_fidelity(variations, random_scenes)


def test_the_default_carries_the_latent_diffusion_route_at_its_measured_settings(random_scenes):
    pipe = t2i.load_pipeline(device="cpu", route="ldm")
    assert type(pipe) is LatentDiffusionPipeline
    assert pipe.unet.dtype == torch.float32  # cast up from the shipped float16
    measured = load_script("build_default").SAMPLING
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS, num_images_per_prompt=N, generator=gen(0))
    assert out.settings.guidance_scale == measured["ldm_guidance_scale"]
    assert out.settings.num_inference_steps == measured["ldm_num_inference_steps"]
    check_fidelity(out.images, random_scenes)


def test_the_default_carries_the_masked_route_at_its_measured_settings(random_scenes):
    pipe = t2i.load_pipeline(device="cpu", route="maskgit")
    assert type(pipe) is MaskGITPipeline
    measured = load_script("build_default").SAMPLING
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS, num_images_per_prompt=N, generator=gen(0))
    assert out.settings.guidance_scale == measured["maskgit_guidance_scale"]
    assert out.settings.num_inference_steps == measured["maskgit_num_inference_steps"]
    check_fidelity(out.images, random_scenes)
    # inpainting: the top half of a rendered scene kept, its codes and so its pixels
    source = render_spec(SPECS[1])  # a small blue square in the top left
    mask = np.zeros((32, 32), np.float32)
    mask[16:] = 1.0
    # another prompt than the scene: a redraw of everything would not keep the square
    edited = pipe(PROMPTS[0], 2, generator=gen(1), image=source, mask_image=mask, output_type="np")
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(source, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        kept = pipe.image_tokenizer.decode(pipe.image_tokenizer.encode(x))
    kept = ((kept.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()[0]
    # the kept rows decode as the source's codes do (the decoder's receptive field blurs the
    # border rows, so the top 3 pixel rows of each kept code row are compared)
    assert np.abs(edited.images[:, :12] - kept[:12]).max() < 0.1


# sha256 (first 16 hex digits) of the pixels as uint8, drawn with the pipeline before the
# route refactor (TextToImagePipeline(..., route=...)); the route pipelines must draw the
# very same (same seed, same machine: another CPU or a GPU may round floats otherwise)
BEFORE_THE_REFACTOR = {
    "dalle": "3d5e69ff4bbbe02d",
    "dalle rerank=4": "ecb3c191560f11ee",
    "unclip": "f6f5b38f0fc33ce0",
    "unclip rerank=4": "6a9fc79d92ecf6a5",
    "unclip variations": "519933c489280ed3",
    "unclip interpolate": "948333139ac14caf",
    "dalle primed": "c17eea6c13e0a57e",
}


def pixel_hash(images: np.ndarray) -> str:
    """The first 16 hex digits of the sha256 of images in [0, 1] as uint8."""
    return hashlib.sha256((images * 255).round().astype(np.uint8).tobytes()).hexdigest()[:16]


def test_each_route_draws_the_same_pixels_as_before_the_refactor(bundle):
    prompts = ["a red circle above a blue square", "a small green triangle in the top left"]
    dalle, unclip = bundle.route("dalle"), bundle.route("unclip")
    kw = dict(num_images_per_prompt=2, output_type="np")
    got = {}
    for name, pipe in (("dalle", dalle), ("unclip", unclip)):
        off = {"rerank": 0} if name == "dalle" else {}  # the default now records a rerank
        got[name] = pixel_hash(pipe(prompts, generator=gen(0), **off, **kw).images)
        reranked = pipe(prompts, generator=gen(0), rerank=4, **kw).images
        got[f"{name} rerank=4"] = pixel_hash(reranked)
    source = Image.fromarray((reranked[0] * 255).round().astype(np.uint8))  # unCLIP's best
    varied = unclip.variations(source, num_images=2, generator=gen(0), output_type="np")
    got["unclip variations"] = pixel_hash(varied.images)
    walk = unclip.interpolate(*prompts, steps=3, generator=gen(0), output_type="np")
    got["unclip interpolate"] = pixel_hash(walk.images)
    primed = dalle(prompts[0], generator=gen(0), image=source, num_prime_rows=2, rerank=0, **kw)
    got["dalle primed"] = pixel_hash(primed.images)
    changed = {k: (got[k], v) for k, v in BEFORE_THE_REFACTOR.items() if got[k] != v}
    assert not changed, (
        f"the default pipeline's images changed from before the refactor (same seed, same "
        f"machine), case: (now, before): {changed}"
    )
