"""The DALL-E route (`DALLEPipeline`) and the saved bundle (`TextToImagePipeline`): calls,
outputs, reranking, priming, settings, routes over shared components, saving / loading."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import gen, tiny_pipeline, tiny_route
from PIL import Image

import t2i.pipelines.common
from t2i import DALLEPipeline, PipelineFormatError, TextToImagePipeline, UnCLIPPipeline
from t2i.models import DALLEPrior, clip_score
from t2i.pipelines import DALLESampling, load_pipeline


def test_returns_num_images_per_prompt_for_each_prompt_in_every_output_type():
    pipe = tiny_route("dalle")
    pil = pipe(["a red circle", "a blue square"], num_images_per_prompt=3, generator=gen()).images
    assert len(pil) == 6 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in pil)
    pt = pipe("a red circle", num_images_per_prompt=2, generator=gen(), output_type="pt").images
    assert pt.shape == (2, 3, 16, 16) and 0 <= pt.min() and pt.max() <= 1
    arr = pipe("a red circle", num_images_per_prompt=2, generator=gen(), output_type="np").images
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    one = pipe("a red circle", num_images_per_prompt=2, generator=gen()).images
    assert (np.asarray(one[1]) == (arr[1] * 255).round()).all()
    (images,) = pipe("a red circle", num_images_per_prompt=2, generator=gen(), return_dict=False)
    assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(images, one, strict=True))


def test_a_seed_gives_the_same_images_and_another_seed_others():
    pipe = tiny_route("dalle")
    a = pipe("a red circle", generator=gen(1), output_type="pt").images
    b = pipe("a red circle", generator=gen(1), output_type="pt").images
    c = pipe("a red circle", generator=gen(2), output_type="pt").images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_round_trip_gives_identical_images_and_records_the_format(saved_pipeline):
    index = json.loads((saved_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "TextToImagePipeline"
    assert index["_t2i_format"] == 1 and index["_t2i_version"]
    assert {"clip", "image_tokenizer", "prior"} <= index.keys()
    loaded = TextToImagePipeline.from_pretrained(saved_pipeline)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.routes == ["dalle"]
    kw = dict(num_images_per_prompt=2, guidance_scale=2.0, output_type="pt")
    want = tiny_route("dalle")("a green triangle", generator=gen(5), **kw).images
    got = loaded.route("dalle")("a green triangle", generator=gen(5), **kw).images
    assert torch.equal(got, want)


def test_an_incompatible_directory_is_refused_with_the_reason(saved_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pipeline directory"):
        TextToImagePipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        TextToImagePipeline.from_pretrained(tmp_path)
    index = json.loads((saved_pipeline / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_t2i_format": 99}))
    with pytest.raises(PipelineFormatError, match="pipeline format 99 .* reads format 1"):
        TextToImagePipeline.from_pretrained(tmp_path)
    with pytest.raises(PipelineFormatError, match="pipeline format 99"):
        DALLEPipeline.from_pretrained(tmp_path)  # every class checks the format
    del index["_t2i_format"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PipelineFormatError, match="not a pipeline saved by t2i"):
        TextToImagePipeline.from_pretrained(tmp_path)


def test_rerank_keeps_the_best_candidates_by_clip_score_best_first():
    pipe = tiny_route("dalle")
    kw = dict(output_type="pt", guidance_scale=1.0)
    candidates = pipe("a red circle", num_images_per_prompt=6, generator=gen(3), **kw).images
    kept = pipe("a red circle", num_images_per_prompt=2, rerank=6, generator=gen(3), **kw).images
    scores = clip_score(pipe.clip, candidates * 2 - 1, ["a red circle"])[:, 0]
    best = candidates[scores.argsort(descending=True)[:2]]
    torch.testing.assert_close(kept, best)
    with pytest.raises(ValueError, match="rerank=1 candidates cannot yield 2"):
        pipe("a red circle", num_images_per_prompt=2, rerank=1)


def test_callback_sees_codes_arrive_and_priming_keeps_the_image_rows():
    pipe = tiny_route("dalle")
    seen = []

    def watch(p, step, index, kwargs):
        seen.append((step, index, kwargs["codes"].clone()))
        return kwargs

    image = torch.rand(3, 16, 16) * 2 - 1
    pipe(
        "a red circle",
        num_images_per_prompt=2,
        generator=gen(),
        image=image,
        num_prime_rows=1,
        callback_on_step_end=watch,
    )
    assert [(s, i) for s, i, _ in seen] == [(k, k + 4) for k in range(12)]
    prime = pipe.image_tokenizer.encode(image[None]).flatten(1)[:, :4]  # first row of 4 x 4
    assert torch.equal(seen[-1][2][:, :4], prime.expand(2, -1))


def test_bad_calls_are_named():
    pipe = tiny_route("dalle")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pipe(["a red circle", " "])
    with pytest.raises(ValueError, match="output_type='jpg'"):
        pipe("a red circle", output_type="jpg")
    with pytest.raises(ValueError, match=r"num_prime_rows=4 must be in \[0, 4\)"):
        pipe("a red circle", image=torch.zeros(3, 16, 16), num_prime_rows=4)
    with pytest.raises(ValueError, match="num_prime_rows=0"):
        pipe("a red circle", image=torch.zeros(3, 16, 16))


@pytest.mark.parametrize(
    "route, setting, value, says",
    [
        ("dalle", "guidance_scale", float("nan"), "guidance_scale=nan: must be a finite number"),
        ("dalle", "temperature", float("inf"), "temperature=inf: must be a finite number"),
        ("dalle", "top_p", 2.0, r"top_p=2.0: must be a number in \(0, 1\]"),
        ("dalle", "top_k", -3, "top_k=-3: must be a whole number >= 1"),
        ("dalle", "rerank", -1, "rerank=-1: must be a whole number >= 0"),
        ("unclip", "num_inference_steps", 0, "num_inference_steps=0: must be a whole number"),
        ("unclip", "prior_candidates", 0, "prior_candidates=0: must be a whole number"),
        ("unclip", "prior_guidance_scale", float("nan"), "prior_guidance_scale=nan"),
        ("unclip", "decoder_temperature", -1.0, "decoder_temperature=-1.0"),
    ],
)
def test_a_setting_out_of_range_is_refused_by_name_before_sampling(route, setting, value, says):
    pipe = tiny_route(route)
    steps = []
    with pytest.raises(ValueError, match=says):
        pipe("a red circle", callback_on_step_end=lambda *a: steps.append(a), **{setting: value})
    assert steps == []  # refused before the first step


def test_a_prior_with_its_own_text_embedding_reads_the_caption_ids_and_no_clip_states():
    pipe = tiny_route("dalle", text_encoder="embed")
    assert pipe.prior.reads == {"image_tokens", "input_ids"}
    seen = {}
    sample, text_features = DALLEPrior.sample, type(pipe.clip).text_features

    def spy(self, input_ids, text_states, **kw):
        seen.update(input_ids=input_ids, text_states=text_states)
        seen["codes"] = sample(self, input_ids, text_states, **kw)
        return seen["codes"]

    def tower(self, *args, **kw):
        seen["tower"] = True
        return text_features(self, *args, **kw)

    kw = dict(num_images_per_prompt=2, output_type="pt")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(DALLEPrior, "sample", spy)
        m.setattr(type(pipe.clip), "text_features", tower)
        images = pipe("a red circle", generator=gen(), **kw).images
    # the prior is given the caption's BPE ids, one row per image, and no CLIP token states
    ids = pipe.clip.tokenize(["a red circle"])
    assert torch.equal(seen["input_ids"], ids.expand(2, -1)) and seen["text_states"] is None
    assert "tower" not in seen  # CLIP's text tower is not run for a prior that does not read it
    # what the pipeline returns is the tokenizer's decoding of exactly those codes
    decoded = pipe.image_tokenizer.decode(pipe.prior.unflatten(seen["codes"])).clamp(-1, 1)
    assert torch.equal(images, (decoded + 1) / 2)
    # and the caption steers the codes: the same seed with another caption draws others
    assert torch.equal(images, pipe("a red circle", generator=gen(), **kw).images)
    assert not torch.equal(images, pipe("a blue square", generator=gen(), **kw).images)


def test_a_call_without_settings_uses_the_sampling_defaults_the_pipeline_records(tmp_path):
    bundle = tiny_pipeline()
    library = {
        "guidance_scale": 3.0,
        "temperature": 1.0,
        "rerank": None,
        "prior_guidance_scale": 1.0,
    }
    library.update(decoder_guidance_scale=3.0, decoder_temperature=1.0)  # unCLIP's decoder
    library.update(num_inference_steps=25, prior_candidates=1)  # the diffusion prior's
    library.update(ldm_guidance_scale=5.0, ldm_num_inference_steps=20, ldm_sampler=None)
    library.update(  # the masked route's
        maskgit_guidance_scale=3.0,
        maskgit_temperature=1.0,
        maskgit_num_inference_steps=12,
        maskgit_rerank=None,
    )
    assert bundle.sampling_defaults == library
    bundle.sampling_defaults.update(guidance_scale=1.5, temperature=0.5)
    recorded = {**library, "guidance_scale": 1.5, "temperature": 0.5}
    bundle.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_t2i_sampling"] == recorded
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_defaults == recorded
    pipe = loaded.route("dalle")
    assert pipe.sampling_defaults == recorded  # the route takes the bundle's record
    kw = dict(num_images_per_prompt=2, output_type="pt")
    implicit = pipe("a red circle", generator=gen(0), **kw).images
    explicit = pipe("a red circle", generator=gen(0), guidance_scale=1.5, temperature=0.5, **kw)
    assert torch.equal(implicit, explicit.images)
    drawn = pipe("a red circle", generator=gen(0), guidance_scale=3.0, temperature=1.0, **kw)
    assert not torch.equal(implicit, drawn.images)


def test_out_settings_is_what_the_call_used_recorded_unless_passed():
    pipe = tiny_route("dalle")
    pipe.sampling_defaults.update(guidance_scale=1.5, temperature=0.5)
    kw = dict(num_images_per_prompt=1, output_type="pt")
    out = pipe("a red circle", generator=gen(0), **kw)
    assert out.settings == DALLESampling(guidance_scale=1.5, temperature=0.5)
    assert out.settings.as_dict() == dict(
        guidance_scale=1.5, temperature=0.5, top_k=None, top_p=None, rerank=None
    )
    passed = pipe("a red circle", generator=gen(0), guidance_scale=2.0, top_k=8, rerank=2, **kw)
    assert passed.settings == DALLESampling(2.0, 0.5, top_k=8, top_p=None, rerank=2)
    # the settings reported are the ones sampled with: passing them back draws the same images
    again = pipe("a red circle", generator=gen(0), **passed.settings.as_dict(), **kw)
    assert torch.equal(again.images, passed.images) and again.settings == passed.settings
    with pytest.raises(AttributeError):  # frozen
        out.settings.guidance_scale = 3.0


def test_bundle_routes_are_pipelines_over_the_very_same_components():
    bundle = tiny_pipeline(unclip=True)
    assert bundle.routes == ["dalle", "unclip"]
    dalle, unclip = bundle.route("dalle"), bundle.route("unclip")
    assert type(dalle) is DALLEPipeline and type(unclip) is UnCLIPPipeline
    assert set(dalle.components) == {"clip", "image_tokenizer", "prior"}
    assert set(unclip.components) == {"clip", "image_tokenizer", "diffusion_prior", "decoder"}
    for pipe in (dalle, unclip):
        for name, component in pipe.components.items():
            assert component is getattr(bundle, name), name  # shared, not copied or reloaded
    with pytest.raises(TypeError):  # the bundle holds components; its routes generate
        bundle("a red circle")
    one = tiny_pipeline()
    assert one.routes == ["dalle"]
    with pytest.raises(ValueError, match="route='unclip' needs a pipeline with a diffusion_prior"):
        one.route("unclip")
    with pytest.raises(ValueError, match="route='dalle3'"):
        one.route("dalle3")


def test_from_pipe_shares_components_carries_the_record_and_names_what_is_missing():
    bundle = tiny_pipeline(unclip=True)
    bundle.sampling_defaults.update(guidance_scale=1.5, decoder_temperature=0.5)
    dalle = DALLEPipeline.from_pipe(bundle)
    assert dalle.prior is bundle.prior and dalle.clip is bundle.clip
    assert dalle.sampling_defaults == bundle.sampling_defaults
    kw = dict(num_images_per_prompt=2, output_type="pt")
    want = bundle.route("dalle")("a red circle", generator=gen(2), **kw).images
    assert torch.equal(dalle("a red circle", generator=gen(2), **kw).images, want)
    # a route from another route: what it lacks is named, or passed in
    with pytest.raises(
        ValueError, match="UnCLIPPipeline needs decoder, diffusion_prior, which the DALLEPipeline"
    ):
        UnCLIPPipeline.from_pipe(dalle)
    parts = dict(diffusion_prior=bundle.diffusion_prior, decoder=bundle.decoder)
    unclip = UnCLIPPipeline.from_pipe(dalle, **parts)
    assert unclip.clip is bundle.clip and unclip.decoder is bundle.decoder
    assert unclip.sampling_defaults["decoder_temperature"] == 0.5
    kw["num_inference_steps"] = 3
    want = bundle.route("unclip")("a red circle", generator=gen(2), **kw).images
    assert torch.equal(unclip("a red circle", generator=gen(2), **kw).images, want)
    # a component passed replaces the pipeline's
    other = tiny_pipeline("embed").prior
    assert DALLEPipeline.from_pipe(dalle, prior=other).prior is other


def test_a_dalle_pipeline_loads_only_its_components_of_a_bundle(saved_unclip_pipeline):
    loaded = []
    load_model = t2i.pipelines.common.load_model

    def spy(path, **kw):
        loaded.append(path.name)
        return load_model(path, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(t2i.pipelines.common, "load_model", spy)
        pipe = DALLEPipeline.from_pretrained(saved_unclip_pipeline)
        assert sorted(loaded) == ["clip", "image_tokenizer", "prior"]
        loaded.clear()
        unclip = UnCLIPPipeline.from_pretrained(saved_unclip_pipeline)
        assert sorted(loaded) == ["clip", "decoder", "diffusion_prior", "image_tokenizer"]
    assert set(pipe.components) == {"clip", "image_tokenizer", "prior"}
    assert not hasattr(pipe, "decoder") and isinstance(unclip, UnCLIPPipeline)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_images_per_prompt=2, output_type="pt")
    want = tiny_route("dalle", unclip=True)("a red circle", generator=gen(4), **kw).images
    assert torch.equal(pipe("a red circle", generator=gen(4), **kw).images, want)


def test_load_pipeline_returns_the_route_asked_for(saved_pipeline, saved_unclip_pipeline, tmp_path):
    assert type(load_pipeline(saved_pipeline, device="cpu")) is DALLEPipeline  # the default
    assert type(load_pipeline(saved_unclip_pipeline, "cpu", route="dalle")) is DALLEPipeline
    unclip = load_pipeline(saved_unclip_pipeline, "cpu", route="unclip")
    assert type(unclip) is UnCLIPPipeline
    assert unclip.decoder.dtype == torch.float32 and unclip.device.type == "cpu"
    with pytest.raises(ValueError, match="route='unclip' needs a pipeline with a diffusion_prior"):
        load_pipeline(saved_pipeline, "cpu", route="unclip")
    with pytest.raises(ValueError, match="route='dalle3'"):
        load_pipeline(saved_pipeline, "cpu", route="dalle3")
    # a route saved on its own is loaded as itself, and only as its own route
    tiny_route("dalle").save_pretrained(tmp_path)
    assert type(load_pipeline(tmp_path, "cpu", route="dalle")) is DALLEPipeline
    with pytest.raises(ValueError, match="holds a DALLEPipeline only"):
        load_pipeline(tmp_path, "cpu", route="unclip")


def test_a_dalle_route_saved_on_its_own_reloads_with_identical_images(tmp_path):
    pipe = tiny_route("dalle")
    pipe.sampling_defaults.update(guidance_scale=2.0, temperature=0.8)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "DALLEPipeline" and index["_t2i_format"] == 1
    assert {"clip", "image_tokenizer", "prior"} <= index.keys() and "decoder" not in index
    loaded = DALLEPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_defaults["guidance_scale"] == 2.0
    kw = dict(num_images_per_prompt=3, output_type="pt")
    out = loaded("a green triangle", generator=gen(7), **kw)
    assert torch.equal(out.images, pipe("a green triangle", generator=gen(7), **kw).images)
    assert out.settings == DALLESampling(guidance_scale=2.0, temperature=0.8)


def test_the_dalle_route_refuses_a_prior_that_reads_an_image_embedding():
    bundle = tiny_pipeline(unclip=True)
    with pytest.raises(ValueError, match="prior reads a CLIP image embedding"):
        DALLEPipeline(
            clip=bundle.clip, image_tokenizer=bundle.image_tokenizer, prior=bundle.decoder
        )


def test_a_misspelt_setting_and_prime_rows_without_an_image_are_refused():
    with pytest.raises(TypeError, match="DALLESampling has no setting 'guidance'"):
        DALLESampling.resolve({}, guidance=2.0)
    pipe = tiny_route("dalle")
    with pytest.raises(ValueError, match="num_prime_rows=2 needs an image"):
        pipe("a red circle", num_images_per_prompt=1, num_prime_rows=2)


def test_a_route_saved_alone_records_only_its_own_settings(tmp_path):
    pipe = tiny_route("dalle")
    pipe.save_pretrained(tmp_path / "dalle")
    index = json.loads((tmp_path / "dalle" / "model_index.json").read_text())
    assert set(index["_t2i_sampling"]) == {"guidance_scale", "temperature", "rerank"}


def test_a_dtype_given_by_name_is_used_and_a_bad_one_is_named(saved_pipeline):
    pipe = load_pipeline(saved_pipeline, device="cpu", torch_dtype="float16")
    assert {p.dtype for p in pipe.prior.parameters()} == {torch.float16}
    assert (
        next(
            load_pipeline(saved_pipeline, device="cpu", torch_dtype="bf16").prior.parameters()
        ).dtype
        == torch.bfloat16
    )
    with pytest.raises(
        ValueError, match="torch_dtype='f16': use one of float32, float16, bfloat16"
    ):
        load_pipeline(saved_pipeline, torch_dtype="f16")
    with pytest.raises(ValueError, match="torch_dtype=torch.int8"):
        TextToImagePipeline.from_pretrained(saved_pipeline, torch_dtype=torch.int8)


def test_saving_a_route_over_a_bundle_is_refused_unless_told(tmp_path):
    bundle = tiny_pipeline(unclip=True)
    bundle.save_pretrained(tmp_path / "b")
    with pytest.raises(
        ValueError, match="holds a pipeline with decoder, diffusion_prior, which this one lacks"
    ):
        bundle.route("dalle").save_pretrained(tmp_path / "b")
    assert TextToImagePipeline.from_pretrained(tmp_path / "b").decoder is not None  # intact
    bundle.save_pretrained(tmp_path / "b")  # the same components: saved again
    bundle.route("dalle").save_pretrained(tmp_path / "b", overwrite=True)
    assert DALLEPipeline.from_pretrained(tmp_path / "b").prior is not None


def test_a_damaged_weights_file_is_named_and_blocks_only_the_routes_that_use_it(tmp_path):
    import shutil

    bundle = tiny_pipeline(unclip=True)
    bundle.save_pretrained(tmp_path / "b")
    decoder = tmp_path / "b" / "decoder" / "diffusion_pytorch_model.safetensors"
    decoder.write_bytes(decoder.read_bytes()[:-200])  # truncated
    assert load_pipeline(tmp_path / "b", device="cpu", route="dalle").prior is not None
    with pytest.raises(
        PipelineFormatError,
        match="decoder.*truncated or unreadable.*a route that does not use the decoder",
    ):
        load_pipeline(tmp_path / "b", device="cpu", route="unclip")
    shutil.copy(tmp_path / "b" / "prior" / "diffusion_pytorch_model.safetensors", tmp_path / "keep")
    (tmp_path / "b" / "prior" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(PipelineFormatError, match="its prior has no weights file"):
        load_pipeline(tmp_path / "b", device="cpu", route="dalle")


def test_edited_recorded_settings_are_named_by_file_and_field(saved_pipeline, tmp_path):
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(saved_pipeline, folder)
    index = json.loads((folder / "model_index.json").read_text())
    for field, value, named in [
        ("_t2i_sampling", {"temperature": "hot"}, "_t2i_sampling.temperature='hot': must be"),
        ("_t2i_sampling", [1], "_t2i_sampling=[1] is not a mapping"),
        ("_t2i_routes", ["dalle", "sd"], "_t2i_routes=['dalle', 'sd']: a list of dalle"),
    ]:
        (folder / "model_index.json").write_text(json.dumps({**index, field: value}))
        with pytest.raises(PipelineFormatError, match=f"model_index.json: {re.escape(named)}"):
            load_pipeline(folder, device="cpu")


def test_the_command_lines_name_the_routes_the_library_has():
    from t2i.cli import ROUTE_NAMES
    from t2i.pipelines import ROUTES

    assert tuple(ROUTES) == ROUTE_NAMES  # generate's choices and the files' checks read these
