"""The unCLIP route (`UnCLIPPipeline`, a bundle's `.route("unclip")`): prompts, variations,
interpolations, settings, save / load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import gen, tiny_pipeline

from t2i import TextToImagePipeline, UnCLIPPipeline
from t2i.models import DALLEPrior, DiffusionDecoder, DiffusionPrior
from t2i.pipelines import UnCLIPSampling
from t2i.pipelines.common import CodeSampling
from t2i.pipelines.unclip import slerp


@pytest.fixture(scope="module")
def bundle():
    return tiny_pipeline(unclip=True)


@pytest.fixture(scope="module")
def pipe(bundle):
    return bundle.route("unclip")


def test_the_unclip_route_draws_seeded_images_through_its_own_stages(bundle, pipe):
    kw = dict(num_images_per_prompt=3, output_type="pt", num_inference_steps=5)
    prompts = ["a red circle", "a blue square"]
    a = pipe(prompts, generator=gen(1), **kw).images
    assert a.shape == (6, 3, 16, 16)
    assert torch.equal(a, pipe(prompts, generator=gen(1), **kw).images)
    dalle = bundle.route("dalle")
    assert not torch.equal(
        a, dalle(prompts, generator=gen(1), output_type="pt", num_images_per_prompt=3).images
    )
    # the decoder reads what the diffusion prior drew, one embedding per image
    seen = {}
    prior_sample, decoder_sample = DiffusionPrior.sample, DALLEPrior.sample

    def drawn(self, *args, **kw):
        seen["drawn"] = prior_sample(self, *args, **kw)
        return seen["drawn"]

    def read(self, *args, **kw):
        seen["read"] = kw["image_embeds"]
        return decoder_sample(self, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DiffusionPrior, "sample", drawn)
        m.setattr(DALLEPrior, "sample", read)
        pipe(prompts, generator=gen(1), **kw)
    assert seen["drawn"].shape == (6, 16) and torch.equal(seen["read"], seen["drawn"])


def test_the_route_round_trips_through_save_and_load(bundle, pipe, tmp_path):
    bundle.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["diffusion_prior"][1] == "DiffusionPrior" and index["decoder"][1] == "DALLEPrior"
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.routes == ["dalle", "unclip"]
    kw = dict(output_type="pt", num_inference_steps=5, decoder_guidance_scale=2.0)
    want = pipe("a green triangle", generator=gen(3), **kw).images
    got = loaded.route("unclip")("a green triangle", generator=gen(3), **kw).images
    assert torch.equal(got, want)


def test_an_unclip_route_saved_on_its_own_reloads_with_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPPipeline" and "prior" not in index
    loaded = UnCLIPPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    kw = dict(output_type="pt", num_inference_steps=4, num_images_per_prompt=2)
    want = pipe("a green triangle", generator=gen(8), **kw).images
    assert torch.equal(loaded("a green triangle", generator=gen(8), **kw).images, want)
    image = want[0] * 2 - 1
    want = pipe.variations(image, num_images=2, generator=gen(9), output_type="pt").images
    got = loaded.variations(image, num_images=2, generator=gen(9), output_type="pt").images
    assert torch.equal(got, want)


def test_the_recorded_prior_guidance_is_what_a_call_without_one_uses(tmp_path):
    bundle = tiny_pipeline(unclip=True)
    kw = dict(output_type="pt", num_inference_steps=5)

    def draw(b, **extra):
        return b.route("unclip")("a green triangle", generator=gen(4), **kw, **extra).images

    assert bundle.sampling_defaults["prior_guidance_scale"] == 1.0  # the library's default
    assert torch.equal(draw(bundle), draw(bundle, prior_guidance_scale=1.0))
    bundle.sampling_defaults["prior_guidance_scale"] = 5.0
    bundle.save_pretrained(tmp_path)
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_defaults["prior_guidance_scale"] == 5.0
    assert torch.equal(draw(loaded), draw(bundle, prior_guidance_scale=5.0))
    assert not torch.equal(draw(loaded), draw(bundle, prior_guidance_scale=1.0))


def test_the_recorded_steps_and_candidates_are_what_a_call_without_them_uses(tmp_path):
    bundle = tiny_pipeline(unclip=True)
    bundle.sampling_defaults.update(num_inference_steps=3, prior_candidates=2)
    bundle.save_pretrained(tmp_path)
    loaded = TextToImagePipeline.from_pretrained(tmp_path).route("unclip")
    calls = []
    sample = DiffusionPrior.sample

    def counted(self, *args, **kw):
        calls.append((kw["num_inference_steps"], kw["num_candidates"]))
        return sample(self, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DiffusionPrior, "sample", counted)
        loaded("a red circle", generator=gen(0), output_type="pt")
        loaded.interpolate("a red circle", "a blue square", 2, gen(0), output_type="pt")
        loaded("a red circle", num_inference_steps=4, prior_candidates=1)
    assert calls == [(3, 2), (3, 2), (4, 1)]


def test_the_decoder_samples_at_its_own_recorded_settings_not_the_dalle_priors(tmp_path):
    bundle = tiny_pipeline(unclip=True)
    bundle.sampling_defaults.update(
        guidance_scale=1.0, temperature=1.0, decoder_guidance_scale=2.5, decoder_temperature=0.5
    )
    bundle.save_pretrained(tmp_path)
    loaded = UnCLIPPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_defaults["decoder_guidance_scale"] == 2.5
    kw = dict(output_type="pt", num_inference_steps=5)

    def draw(**extra):
        return loaded("a green triangle", generator=gen(5), **kw, **extra)

    own = dict(decoder_guidance_scale=2.5, decoder_temperature=0.5)
    dalle_priors = dict(decoder_guidance_scale=1.0, decoder_temperature=1.0)
    assert draw().settings.decoder() == CodeSampling(2.5, 0.5, None, None)
    assert torch.equal(draw().images, draw(**own).images)
    assert not torch.equal(draw().images, draw(**dalle_priors).images)
    image = torch.zeros(3, 16, 16)

    def vary(**extra):
        return loaded.variations(image, 3, gen(6), output_type="pt", **extra).images

    assert torch.equal(vary(), vary(**own))
    assert not torch.equal(vary(), vary(**dalle_priors))
    with pytest.raises(TypeError, match="guidance_scale"):  # the DALL-E prior's names: not here
        loaded("a green triangle", guidance_scale=2.5)


def test_out_settings_and_settings_resolve_given_then_recorded_then_library(bundle):
    pipe = bundle.route("unclip")  # its own record: changing it leaves the bundle's alone
    assert pipe.settings() == UnCLIPSampling()  # nothing recorded beyond the library's
    pipe.sampling_defaults.update(prior_guidance_scale=2.0, num_inference_steps=3)
    assert bundle.sampling_defaults["prior_guidance_scale"] == 1.0
    want = UnCLIPSampling(prior_guidance_scale=2.0, num_inference_steps=3)
    assert pipe.settings() == want
    out = pipe("a red circle", num_images_per_prompt=1, generator=gen(0), output_type="pt")
    assert out.settings == want
    given = dict(num_inference_steps=2, decoder_temperature=0.5, top_k=4, rerank=2)
    out = pipe("a red circle", 1, gen(0), output_type="pt", **given)
    assert out.settings == UnCLIPSampling(prior_guidance_scale=2.0, **given)
    assert out.settings.as_dict() == {**want.as_dict(), **given}
    assert pipe.settings(**given) == out.settings
    again = pipe("a red circle", 1, gen(0), output_type="pt", **out.settings.as_dict())
    assert torch.equal(again.images, out.images)
    varied = pipe.variations(torch.zeros(3, 16, 16), 1, gen(0), decoder_temperature=0.5)
    assert varied.settings == UnCLIPSampling(2.0, 3, decoder_temperature=0.5)


def test_a_dalle_only_pipeline_saves_no_unclip_stages_and_names_the_missing_route(tmp_path):
    dalle = tiny_pipeline()
    dalle.save_pretrained(tmp_path)
    assert not (tmp_path / "decoder").exists()
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    assert loaded.routes == ["dalle"] and loaded.decoder is None
    with pytest.raises(ValueError, match="route='unclip' needs a pipeline with a diffusion_prior"):
        loaded.route("unclip")
    with pytest.raises(ValueError, match="route='dalle3'"):
        loaded.route("dalle3")
    with pytest.raises(FileNotFoundError, match="component 'decoder' missing"):
        UnCLIPPipeline.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs both a diffusion_prior and a decoder"):
        TextToImagePipeline(
            clip=dalle.clip,
            image_tokenizer=dalle.image_tokenizer,
            prior=dalle.prior,
            decoder=dalle.prior,
        )


def test_a_decoder_must_read_image_embeddings(bundle):
    parts = dict(clip=bundle.clip, image_tokenizer=bundle.image_tokenizer, decoder=bundle.prior)
    message = r"decoder reads \['image_tokens', 'text_states'\]; unCLIP's decoder reads a CLIP"
    with pytest.raises(ValueError, match=message):
        UnCLIPPipeline(diffusion_prior=bundle.diffusion_prior, **parts)
    with pytest.raises(ValueError, match=message):  # a bundle refuses it when built
        TextToImagePipeline(prior=bundle.prior, diffusion_prior=bundle.diffusion_prior, **parts)


def test_variations_differ_from_each_other_and_from_the_image(bundle, pipe):
    image = bundle.route("dalle")(
        "a red circle", generator=gen(0), output_type="pt", num_images_per_prompt=1
    ).images[0]
    image = image * 2 - 1
    out = pipe.variations(image, num_images=4, generator=gen(1), output_type="pt").images
    assert out.shape == (4, 3, 16, 16)
    flat = (out * 2 - 1).flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(not torch.allclose(row, image.flatten(), atol=1e-3) for row in flat)
    again = pipe.variations(image, num_images=4, generator=gen(1), output_type="pt").images
    assert torch.equal(out, again)
    # the decoder is given the image's own CLIP embedding, one per variation
    seen = {}
    real = DALLEPrior.sample

    def spy(self, *args, **kw):
        seen["embeds"] = kw["image_embeds"]
        return real(self, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DALLEPrior, "sample", spy)
        pipe.variations(image, num_images=2, generator=gen(1))
    want = pipe.clip.encode_image(image[None])
    torch.testing.assert_close(seen["embeds"], want.expand(2, -1))


def test_interpolate_walks_the_great_circle_between_the_prompts(pipe):
    out = pipe.interpolate(
        "a red circle",
        "a blue square",
        steps=5,
        generator=gen(0),
        output_type="pt",
        num_inference_steps=5,
    ).images
    assert out.shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="steps=1"):
        pipe.interpolate("a", "b", steps=1)


def test_slerp_keeps_unit_norm_ends_and_equal_angles():
    g = gen(0)
    a, b = torch.randn(8, generator=g), torch.randn(8, generator=g)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(path[0], a / a.norm())
    torch.testing.assert_close(path[-1], b / b.norm())
    steps = (path[1:] * path[:-1]).sum(1)  # cosines of consecutive points: all the same
    torch.testing.assert_close(steps, steps[:1].expand(4))
    torch.testing.assert_close(slerp(a, 2 * a, torch.rand(3)), (a / a.norm()).expand(3, -1))


def test_a_pixel_decoder_draws_the_route_round_trips_and_refuses_priming(tmp_path):
    bundle = tiny_pipeline(unclip=True, pixels=True)
    pipe = bundle.route("unclip")
    kw = dict(output_type="pt", num_inference_steps=4, num_images_per_prompt=2)
    a = pipe(["a red circle", "a blue square"], generator=gen(1), **kw).images
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, pipe(["a red circle", "a blue square"], generator=gen(1), **kw).images)
    # the decoder denoises from what the diffusion prior drew, one embedding per image
    seen, real = {}, DiffusionDecoder.sample

    def spy(self, image_embeds, **kw):
        seen["read"] = image_embeds
        return real(self, image_embeds, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DiffusionDecoder, "sample", spy)
        pipe(["a red circle", "a blue square"], generator=gen(1), **kw)
    assert seen["read"].shape == (4, 16)
    bundle.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["decoder"][1] == "DiffusionDecoder"
    loaded = TextToImagePipeline.from_pretrained(tmp_path).route("unclip")
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(loaded(["a red circle", "a blue square"], generator=gen(1), **kw).images, a)
    image = a[0] * 2 - 1
    out = pipe.variations(image, num_images=3, generator=gen(2), output_type="pt").images
    assert out.shape == (3, 3, 16, 16) and not torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="decoder draws pixels"):
        pipe("a red circle", image=image, num_prime_rows=1, **kw)
