"""TextToImagePipeline: calls, outputs, reranking, priming, and saving / loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline
from PIL import Image

from t2i import PipelineFormatError, TextToImagePipeline
from t2i.models import clip_score


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_returns_num_images_per_prompt_for_each_prompt_in_every_output_type():
    pipe = tiny_pipeline()
    pil = pipe(["a red circle", "a blue square"], num_images_per_prompt=3, generator=gen()).images
    assert len(pil) == 6 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in pil)
    pt = pipe("a red circle", num_images_per_prompt=2, generator=gen(), output_type="pt").images
    assert pt.shape == (2, 3, 16, 16) and 0 <= pt.min() and pt.max() <= 1
    arr = pipe("a red circle", num_images_per_prompt=2, generator=gen(), output_type="np").images
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    one = pipe("a red circle", num_images_per_prompt=2, generator=gen()).images
    assert (np.asarray(one[1]) == (arr[1] * 255).round()).all()


def test_a_seed_gives_the_same_images_and_another_seed_others():
    pipe = tiny_pipeline()
    a = pipe("a red circle", generator=gen(1), output_type="pt").images
    b = pipe("a red circle", generator=gen(1), output_type="pt").images
    c = pipe("a red circle", generator=gen(2), output_type="pt").images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_round_trip_gives_identical_images_and_records_the_format(saved_pipeline):
    index = json.loads((saved_pipeline / "model_index.json").read_text())
    assert index["_t2i_format"] == 1 and index["_t2i_version"]
    assert {"clip", "image_tokenizer", "prior"} <= index.keys()
    loaded = TextToImagePipeline.from_pretrained(saved_pipeline)
    loaded.set_progress_bar_config(disable=True)
    kw = dict(num_images_per_prompt=2, guidance_scale=2.0, output_type="pt")
    want = tiny_pipeline()("a green triangle", generator=gen(5), **kw).images
    assert torch.equal(loaded("a green triangle", generator=gen(5), **kw).images, want)


def test_an_incompatible_directory_is_refused_with_the_reason(saved_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pipeline directory"):
        TextToImagePipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        TextToImagePipeline.from_pretrained(tmp_path)
    index = json.loads((saved_pipeline / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_t2i_format": 99}))
    with pytest.raises(PipelineFormatError, match="pipeline format 99 .* reads format 1"):
        TextToImagePipeline.from_pretrained(tmp_path)
    del index["_t2i_format"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PipelineFormatError, match="not a pipeline saved by t2i"):
        TextToImagePipeline.from_pretrained(tmp_path)


def test_rerank_keeps_the_best_candidates_by_clip_score_best_first():
    pipe = tiny_pipeline()
    kw = dict(output_type="pt", guidance_scale=1.0)
    candidates = pipe("a red circle", num_images_per_prompt=6, generator=gen(3), **kw).images
    kept = pipe("a red circle", num_images_per_prompt=2, rerank=6, generator=gen(3), **kw).images
    scores = clip_score(pipe.clip, candidates * 2 - 1, ["a red circle"])[:, 0]
    best = candidates[scores.argsort(descending=True)[:2]]
    torch.testing.assert_close(kept, best)
    with pytest.raises(ValueError, match="rerank=1 candidates cannot yield 2"):
        pipe("a red circle", num_images_per_prompt=2, rerank=1)


def test_callback_sees_codes_arrive_and_priming_keeps_the_image_rows():
    pipe = tiny_pipeline()
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
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pipe(["a red circle", " "])
    with pytest.raises(ValueError, match="output_type='jpg'"):
        pipe("a red circle", output_type="jpg")
    with pytest.raises(ValueError, match=r"num_prime_rows=4 must be in \[0, 4\)"):
        pipe("a red circle", image=torch.zeros(3, 16, 16), num_prime_rows=4)


def test_a_prior_with_its_own_text_embedding_fills_the_same_pipeline():
    pipe = tiny_pipeline("embed")
    images = pipe("a red circle", num_images_per_prompt=2, generator=gen(), output_type="pt")
    assert images.images.shape == (2, 3, 16, 16)


def test_a_call_without_settings_uses_the_sampling_defaults_the_pipeline_records(tmp_path):
    pipe = tiny_pipeline()
    library = {"guidance_scale": 3.0, "temperature": 1.0, "prior_guidance_scale": 1.0}
    library.update(decoder_guidance_scale=3.0, decoder_temperature=1.0)  # unCLIP's decoder
    library.update(num_inference_steps=25, prior_candidates=1)  # the diffusion prior's
    assert pipe.sampling_defaults == library
    pipe.sampling_defaults.update(guidance_scale=1.5, temperature=0.5)
    recorded = {**library, "guidance_scale": 1.5, "temperature": 0.5}
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_t2i_sampling"] == recorded
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_defaults == recorded
    kw = dict(num_images_per_prompt=2, output_type="pt")
    implicit = loaded("a red circle", generator=gen(0), **kw).images
    explicit = loaded("a red circle", generator=gen(0), guidance_scale=1.5, temperature=0.5, **kw)
    assert torch.equal(implicit, explicit.images)
    drawn = loaded("a red circle", generator=gen(0), guidance_scale=3.0, temperature=1.0, **kw)
    assert not torch.equal(implicit, drawn.images)
