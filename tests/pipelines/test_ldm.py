"""LatentDiffusionPipeline: guidance, negative prompts, image-to-image, samplers, save/load,
reranking, and its place in the bundle."""

from __future__ import annotations

import ldm_tiny
import numpy as np
import pytest
import torch
from conftest import gen, tiny_pipeline

from t2i.pipelines import LatentDiffusionPipeline, TextToImagePipeline, load_pipeline

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def pipe():
    return ldm_tiny.pipeline()


def draw(pipe, **kw):
    args = dict(num_images_per_prompt=2, generator=gen(0), num_inference_steps=3, output_type="pt")
    return pipe(PROMPTS, **{**args, **kw}).images


def test_images_are_seeded_and_follow_the_caption(pipe):
    first = draw(pipe)
    assert first.shape == (4, 3, 16, 16) and 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, draw(pipe))
    other = pipe(
        ["a green triangle"] * 2,
        num_images_per_prompt=2,
        generator=gen(0),
        num_inference_steps=3,
        output_type="pt",
    ).images
    assert not torch.equal(first, other)


def test_guidance_one_is_the_conditional_model_alone(pipe):
    images = draw(pipe, guidance_scale=1.0)
    ids = pipe.clip.tokenize(PROMPTS)
    states = pipe.clip.text_features(ids).states.repeat_interleave(2, dim=0)
    latents = pipe.unet.sample(
        states, None, 1.0, 3, "dpm", gen(0), scheduler_config=pipe.scheduler.config
    )
    alone = ((pipe.vae.decode(latents).clamp(-1, 1) + 1) / 2).cpu()
    assert torch.equal(images, alone)
    # the unconditional branch is not run at all: a negative prompt changes nothing
    assert torch.equal(images, draw(pipe, guidance_scale=1.0, negative_prompt="a cat"))


def test_an_empty_negative_prompt_is_the_unconditional_branch_and_another_changes_it(pipe):
    plain = draw(pipe, guidance_scale=4.0)
    assert torch.equal(plain, draw(pipe, guidance_scale=4.0, negative_prompt=""))
    assert not torch.equal(plain, draw(pipe, guidance_scale=4.0, negative_prompt="a square"))
    with pytest.raises(ValueError, match="3 negative prompts for 2 prompts"):
        draw(pipe, negative_prompt=["a", "b", "c"])


def test_image_to_image_at_strength_zero_returns_the_reconstruction(pipe):
    image = torch.rand(3, 16, 16) * 2 - 1
    kept = draw(pipe, image=image, strength=0.0)
    recon = ((pipe.vae.reconstruct(image[None]).clamp(-1, 1) + 1) / 2).expand_as(kept)
    assert torch.allclose(kept, recon, atol=1e-6)
    noised = draw(pipe, image=image, strength=0.7)
    assert not torch.allclose(noised, recon, atol=1e-3)


def test_each_sampler_by_name_and_the_callback_sees_every_step(pipe):
    seen = []
    for name in ("ddim", "dpm", "euler", "unipc"):
        out = pipe(
            PROMPTS[0],
            num_images_per_prompt=1,
            generator=gen(0),
            sampler=name,
            num_inference_steps=4,
            output_type="pt",
            callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].shape),
        )
        assert out.settings.sampler == name and torch.isfinite(out.images).all()
    assert seen == [(1, 4, 8, 8)] * 16
    with pytest.raises(ValueError, match="sampler='heun'"):
        pipe(PROMPTS[0], sampler="heun")


def test_a_generator_per_image_and_reranking(pipe):
    gens = [gen(i) for i in range(4)]
    images = draw(pipe, generator=gens)
    single = pipe(
        PROMPTS[1],
        num_images_per_prompt=1,
        generator=gen(3),
        num_inference_steps=3,
        output_type="pt",
    ).images
    assert torch.allclose(images[3], single[0], atol=1e-5)  # drawn by generator 3 alone
    best = draw(pipe, rerank=4)
    assert best.shape == (4, 3, 16, 16)


def test_the_route_round_trips_with_identical_images(pipe, tmp_path):
    pipe.sampling_defaults.update(ldm_guidance_scale=2.5)
    pipe.save_pretrained(tmp_path / "ldm")
    loaded = LatentDiffusionPipeline.from_pretrained(tmp_path / "ldm")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    out = loaded(
        PROMPTS, num_images_per_prompt=2, generator=gen(0), num_inference_steps=3, output_type="pt"
    )
    assert out.settings.guidance_scale == 2.5  # recorded
    assert torch.equal(out.images, draw(pipe))
    assert torch.equal(
        load_pipeline(tmp_path / "ldm", "cpu", route="ldm")(
            PROMPTS,
            num_images_per_prompt=2,
            generator=gen(0),
            num_inference_steps=3,
            output_type="pt",
        ).images,
        out.images,
    )


def test_the_transformer_backbone_over_vq_latents_round_trips(tmp_path):
    pipe = ldm_tiny.pipeline(backbone="transformer", vq=True)
    pipe.save_pretrained(tmp_path / "ldm")
    loaded = LatentDiffusionPipeline.from_pretrained(tmp_path / "ldm")
    assert loaded.unet.config.backbone == "transformer"
    assert type(loaded.vae).__name__ == "VQLatents" and loaded.vae.scaling_factor == 2.0
    loaded.set_progress_bar_config(disable=True)
    images = draw(loaded, guidance_scale=2.0)
    assert images.shape == (4, 3, 16, 16) and torch.equal(images, draw(pipe, guidance_scale=2.0))


def ldm_bundle(parts: dict, base: TextToImagePipeline) -> TextToImagePipeline:
    """A bundle of the tiny DALL-E route's prior and tokenizer and the tiny LDM parts."""
    return TextToImagePipeline(image_tokenizer=base.image_tokenizer, prior=base.prior, **parts)


def test_a_bundle_carries_the_route_beside_the_others(tmp_path):
    parts, base = ldm_tiny.parts(), tiny_pipeline()
    bundle = ldm_bundle(parts, base)
    assert bundle.routes == ["dalle", "ldm"]
    ldm = bundle.route("ldm")
    assert ldm.unet is parts["unet"] and ldm.clip is bundle.clip
    bundle.save_pretrained(tmp_path / "bundle")
    again = load_pipeline(tmp_path / "bundle", "cpu", route="ldm")
    again.set_progress_bar_config(disable=True)
    ldm.set_progress_bar_config(disable=True)
    assert torch.equal(draw(again), draw(ldm))
    with pytest.raises(ValueError, match="needs all of a vae and a unet and a scheduler, or none"):
        TextToImagePipeline(
            clip=parts["clip"],
            image_tokenizer=base.image_tokenizer,
            prior=base.prior,
            unet=parts["unet"],
        )
    with pytest.raises(ValueError, match="route='ldm' needs a pipeline with a vae"):
        base.route("ldm")


def test_generate_and_evaluate_take_the_route(tmp_path, capsys):
    import json

    from PIL import Image

    from t2i import evaluate, generate

    parts, base = ldm_tiny.parts(), tiny_pipeline()
    bundle = ldm_bundle(parts, base)
    bundle.save_pretrained(tmp_path / "bundle")
    out = tmp_path / "png"
    argv = [
        "a red circle",
        "--model",
        str(tmp_path / "bundle"),
        "--route",
        "ldm",
        "-n",
        "2",
        "--steps",
        "3",
        "--negative-prompt",
        "a square",
        "--out",
        str(out),
    ]
    assert generate.main(argv) == 0
    written = sorted(out.glob("*.png"))
    meta = json.loads(Image.open(written[0]).text["t2i"])
    assert meta["route"] == "ldm" and meta["negative_prompt"] == "a square"
    assert meta["num_inference_steps"] == 3 and meta["sampler"] is None
    ldm = load_pipeline(tmp_path / "bundle", "cpu", route="ldm")
    ldm.set_progress_bar_config(disable=True)
    drawn = ldm(
        "a red circle",
        negative_prompt="a square",
        num_images_per_prompt=2,
        generator=gen(0),
        num_inference_steps=3,
        output_type="np",
    ).images
    pixels = (drawn[0] * 255).round().astype("uint8")
    assert (pixels == np.asarray(Image.open(written[0]))).all()
    report = tmp_path / "eval.json"
    argv = [
        str(tmp_path / "bundle"),
        "--n",
        "2",
        "--images-per-prompt",
        "1",
        "--settings",
        "ldm_plain",
        "ldm_steps_5",
        "--out",
        str(report),
    ]
    assert evaluate.main(argv) == 0
    scores = json.loads(report.read_text())
    assert scores["ldm_steps_5"]["settings"]["num_inference_steps"] == 5
    assert scores["ldm_plain"]["route"] == "ldm" and scores["ldm_plain"]["one_object"]["n"] == 2
