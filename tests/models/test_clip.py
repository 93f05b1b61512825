"""CLIP through open_clip: tokenizer round trips and truncation, unit-norm embeddings, the
contrastive loss learning a tiny set, scoring and reranking, save -> load, and loading an
open_clip architecture's weights from a local file."""

from __future__ import annotations

import logging

import open_clip
import pytest
import torch
from conftest import save_tiny_open_clip
from model_checks import assert_one_step_trains
from tiny import CLIP as TINY_CLIP

from t2i.data.shapes import make_sample, to_tensor
from t2i.data.text import CaptionCollator
from t2i.models import CLIPModel, clip_score, rerank
from t2i.models.clip import TextFeatures

TINY = {**TINY_CLIP, "context_length": 24}


def tiny(seed: int = 0, **overrides) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(**{**TINY, **overrides})


def shapes_batch(clip: CLIPModel, n: int = 8) -> dict:
    samples = [make_sample(i, seed=5, size=16, num_objects=1) for i in range(n)]
    return {
        "pixel_values": torch.stack([to_tensor(s["image"]) for s in samples]),
        "input_ids": clip.tokenize([s["caption"] for s in samples]),
    }


def test_tokenizer_round_trip():
    clip = tiny()
    ids = clip.tokenize(["a red circle", "a small blue square at the top"])
    assert ids.shape == (2, 24) and ids.dtype == torch.int64
    tokenizer = clip.tokenizer
    for row, text in zip(ids, ["a red circle", "a small blue square at the top"], strict=True):
        body = [
            t for t in row.tolist() if t not in (0, tokenizer.sot_token_id, tokenizer.eot_token_id)
        ]
        assert tokenizer.decode(body).strip() == text


def test_long_prompts_are_cut_with_a_one_line_warning_that_says_what_was_lost(caplog):
    clip = tiny()
    long = "a large red circle in the top left above a small blue square " * 40
    with caplog.at_level(logging.WARNING, logger="t2i.models.clip"):
        ids = clip.tokenize(long)
    assert ids.shape == (1, 24) and int(ids[0, -1]) == clip.tokenizer.eot_token_id
    (message,) = [r.getMessage() for r in caplog.records]
    assert "longer than the context of 24; cut off: 'a small blue square" in message
    assert len(message) < 250 and "\n" not in message  # not the whole prompt, twice
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="t2i.models.clip"):
        clip.tokenize("a red circle")  # a prompt that fits says nothing
    assert not caplog.records


def test_words_no_training_caption_held_are_named_and_the_record_survives_a_save(caplog, tmp_path):
    clip = tiny()
    assert clip.unknown_words("a photo of a dog") == []  # untrained: nothing known, no claim
    clip.train()
    clip.training_losses(shapes_batch(clip, 8))  # training captions of the shapes world
    # the 8 captions include "a drawing of a small green triangle on the left"
    assert clip.unknown_words("a small green triangle, on the left") == []
    assert clip.unknown_words("a photo of a dog, green") == ["photo", "dog"]
    assert clip.unknown_words("красный круг") == ["красный", "круг"]
    clip.save_pretrained(tmp_path)
    loaded = CLIPModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.seen, clip.seen)
    with caplog.at_level(logging.WARNING, logger="t2i.models.clip"):
        loaded.tokenize(["a photo of a dog", "a small green triangle"])
    (message,) = [r.getMessage() for r in caplog.records]
    assert "'photo', 'dog'" in message and "triangle" not in message


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_an_error(prompt):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        tiny().tokenize(["a red circle", prompt])


def test_embeddings_are_unit_norm_and_token_states_come_with_them():
    clip = tiny().eval()
    batch = shapes_batch(clip, 4)
    image = clip.encode_image(batch["pixel_values"])
    assert image.shape == (4, 16)
    torch.testing.assert_close(image.norm(dim=1), torch.ones(4))
    features = clip.text_features(batch["input_ids"])
    assert isinstance(features, TextFeatures)
    torch.testing.assert_close(features.embeds.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(features.embeds, clip.encode_text(batch["input_ids"]))
    assert features.states.shape == (4, 24, 32)
    assert torch.equal(features.mask, batch["input_ids"] != 0)


def test_pil_images_and_tensors_score_the_same():
    clip = tiny().eval()
    samples = [make_sample(i, seed=1, size=16) for i in range(3)]
    pil = [s["image"] for s in samples]
    tensors = torch.stack([to_tensor(im) for im in pil])
    texts = ["a red circle", "a square"]
    scores = clip_score(clip, pil, texts)
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores, clip_score(clip, tensors, texts))


def test_larger_images_are_shrunk_without_aliasing():
    clip = tiny().eval()  # reads 16 px
    size = clip.config.image_size
    stripes = torch.ones(1, 3, 3 * size, 3 * size)
    stripes[..., ::2] = -1  # one-pixel stripes, black and white: grey when shrunk 3 times
    seen = clip.preprocess(stripes) * clip.std + clip.mean  # back to [0, 1]
    assert seen.shape[-1] == size
    inside = seen[..., 1:-1, 1:-1]  # the border pixels lean to the edge's stripe
    torch.testing.assert_close(inside, torch.full_like(inside, 0.5), atol=0.02, rtol=0)


def test_rerank_returns_the_best_scoring_images_in_order():
    clip = tiny().eval()
    images = torch.stack([to_tensor(make_sample(i, seed=2, size=16)["image"]) for i in range(6)])
    scores = clip_score(clip, images, "a green triangle")[:, 0]
    best = rerank(clip, images, "a green triangle", k=3)
    assert torch.equal(best, images[scores.argsort(descending=True)[:3]])
    pil = [make_sample(i, seed=2, size=16)["image"] for i in range(6)]
    order = scores.argsort(descending=True)[:2].tolist()
    assert rerank(clip, pil, "a green triangle", k=2) == [pil[i] for i in order]


def test_contrastive_loss_falls_and_matching_pairs_score_higher():
    clip = tiny(seed=1)
    batch = shapes_batch(clip, 8)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = clip.training_losses(batch)
        first = first if first is not None else float(losses["loss"].detach())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert float(losses["loss"].detach()) < 0.5 * first
    clip.eval()
    sims = clip.encode_image(batch["pixel_values"]) @ clip.encode_text(batch["input_ids"]).t()
    matched = sims.diagonal().mean()
    shuffled = sims[torch.arange(8), torch.arange(8).roll(1)].mean()
    assert matched > shuffled + 0.2
    assert float(clip.training_losses(batch)["accuracy"]) >= 0.75


def test_one_step_reaches_every_parameter():
    clip = tiny()
    assert_one_step_trains(clip, shapes_batch(clip, 4))


def test_save_load_round_trip(tmp_path):
    clip = tiny().eval()
    batch = shapes_batch(clip, 4)
    clip.save_pretrained(tmp_path)
    loaded = CLIPModel.from_pretrained(tmp_path).eval()
    assert torch.equal(
        clip.encode_image(batch["pixel_values"]), loaded.encode_image(batch["pixel_values"])
    )
    assert torch.equal(clip.encode_text(batch["input_ids"]), loaded.encode_text(batch["input_ids"]))


def test_an_open_clip_architecture_loads_its_weights_from_a_local_file(tmp_path):
    reference, weights = save_tiny_open_clip(tmp_path, "t2i-test-tiny", image_size=32)
    clip = CLIPModel.from_open_clip("t2i-test-tiny", pretrained=str(weights)).eval()
    assert clip.config.image_size == 32 and clip.config.context_length == 20
    assert tuple(clip.config.image_mean) == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    ids = clip.tokenize(["a red circle"])
    assert torch.equal(clip.encode_text(ids), reference.encode_text(ids, normalize=True))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    expected = reference.encode_image(clip.preprocess(image), normalize=True)
    assert torch.equal(clip.encode_image(image), expected)

    clip.save_pretrained(tmp_path / "saved")  # and it becomes a t2i model directory
    again = CLIPModel.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(again.encode_text(ids), clip.encode_text(ids))


def test_an_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="'ViT-Nope'.*list_models"):
        CLIPModel(architecture="ViT-Nope")


def relation_batch(clip: CLIPModel, n: int = 8) -> dict:
    samples = [make_sample(i, seed=6, size=16, num_objects=2) for i in range(n)]
    batch = CaptionCollator(clip.config.context_length, hard_negatives="relations")(samples)
    return {**batch, "pixel_values": torch.stack([to_tensor(s["image"]) for s in samples])}


def test_the_hard_negative_term_is_each_images_choice_between_its_caption_and_the_swap():
    clip = tiny(seed=2).eval()
    batch = relation_batch(clip, 6)
    batch["negative_mask"][4:] = False  # rows without a negative count for nothing
    losses = clip.training_losses(batch)
    plain = clip.training_losses({k: batch[k] for k in ("pixel_values", "input_ids")})
    images = clip.encode_image(batch["pixel_values"])[:4]
    own = (images * clip.encode_text(batch["input_ids"])[:4]).sum(1)
    swapped = (images * clip.encode_text(batch["negative_input_ids"])[:4]).sum(1)
    scale = clip.model.logit_scale.exp()
    expected = torch.nn.functional.softplus(scale * (swapped - own)).mean()
    assert torch.allclose(losses["hard_negative_loss"], expected, atol=1e-5)
    assert torch.allclose(losses["loss"], plain["loss"] + expected, atol=1e-5)
    assert float(losses["hard_negative_accuracy"]) == float((own > swapped).float().mean())
    batch["negative_input_ids"][4:] = batch["input_ids"][:2]  # masked rows: changes nothing
    assert torch.allclose(clip.training_losses(batch)["loss"], losses["loss"], atol=1e-6)


def test_training_on_hard_negatives_teaches_the_relation():
    clip = tiny(seed=3)
    batch = relation_batch(clip, 8)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    first = float(clip.training_losses(batch)["hard_negative_loss"])
    for _ in range(40):
        losses = clip.training_losses(batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    last = clip.training_losses(batch)
    assert float(last["hard_negative_loss"]) < 0.5 * first
    assert float(last["hard_negative_accuracy"]) == 1.0
