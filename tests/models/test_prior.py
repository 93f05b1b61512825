"""The DALL-E prior: sequences, losses, the causal mask, guidance and cached sampling."""

from __future__ import annotations

import pytest
import torch
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import DALLEPrior, load_model
from t2i.nn.sampling import sample_logits
from t2i.nn.transformer import KVCache

L, K, WIDTH, E = 8, 16, 12, 10


def tiny(text_encoder: str = "clip", grids=(4,), **kw) -> DALLEPrior:
    args = dict(
        num_tokens=K,
        grid_sizes=list(grids),
        context_length=L,
        text_encoder=text_encoder,
        clip_width=WIDTH,
        embed_dim=E,
        text_vocab_size=100,
        dim=32,
        depth=2,
        heads=4,
    )
    return DALLEPrior(**{**args, **kw})


def batch(n: int = 6, grids=(4,), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, L), generator=g)
    ids[:, 5:] = 0  # padding after the caption
    levels = tuple(torch.randint(0, K, (n, s, s), generator=g) for s in grids)
    return {
        "image_tokens": levels[0] if len(levels) == 1 else levels,
        "input_ids": ids,
        "text_states": torch.randn(n, L, WIDTH, generator=g),
        "image_embeds": torch.randn(n, E, generator=g),
    }


def conditions(b: dict) -> tuple:
    return b["input_ids"], b["text_states"]


def test_flatten_reads_levels_top_first_and_unflatten_inverts_it():
    model = tiny(grids=(2, 4))
    b = batch(grids=(2, 4))
    flat = model.flatten(b["image_tokens"])
    assert flat.shape == (6, 4 + 16) and model.image_len == 20
    assert torch.equal(flat[:, :4], b["image_tokens"][0].flatten(1))
    back = model.unflatten(flat)
    assert all(torch.equal(x, y) for x, y in zip(back, b["image_tokens"], strict=True))
    with pytest.raises(ValueError, match=r"grids of sides \[2, 4\]"):
        model.flatten(torch.zeros(2, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("text_encoder", ["clip", "embed", "clip_image"])
def test_one_step_trains_every_parameter(text_encoder):
    torch.manual_seed(0)  # some captions dropped, some kept: the null prefix learns too
    model = tiny(text_encoder, cond_drop_prob=0.5)
    assert_one_step_trains(model, batch(16))


@pytest.mark.parametrize("text_encoder", ["clip", "embed", "clip_image"])
def test_seeded_losses_agree(text_encoder):
    def build():
        torch.manual_seed(0)
        return tiny(text_encoder)

    assert_seeded_losses_agree(build, batch())


def test_loss_weighs_text_and_image_cross_entropies():
    torch.manual_seed(0)
    model = tiny("embed", text_loss_weight=0.25, image_loss_weight=0.75).eval()  # no dropping
    out = model.training_losses(batch())
    torch.testing.assert_close(out["loss"], 0.25 * out["text_ce"] + 0.75 * out["image_ce"])
    assert "text_ce" not in tiny("clip").training_losses(batch())


def test_text_loss_scores_only_real_caption_tokens():
    torch.manual_seed(0)
    model = tiny("embed").eval()
    b = batch()
    base = model.training_losses(b)["text_ce"]
    b["input_ids"][:, 6:] = 0  # padding was already 0: nothing changes...
    torch.testing.assert_close(model.training_losses(b)["text_ce"], base)
    b["input_ids"][:, 4] = 0  # ...a real token turned into padding is no longer scored
    assert not torch.allclose(model.training_losses(b)["text_ce"], base)


@pytest.mark.parametrize("text_encoder", ["clip", "embed"])
def test_causal_mask_later_codes_never_change_earlier_logits(text_encoder):
    torch.manual_seed(0)
    model = tiny(text_encoder, grids=(2, 4)).eval()
    b = batch(2, grids=(2, 4))
    tokens = model.flatten(b["image_tokens"])
    logits = model(tokens, *conditions(b))
    for i in (3, 11, 19):
        changed = tokens.clone()
        changed[:, i] = (changed[:, i] + 1) % K
        again = model(changed, *conditions(b))
        torch.testing.assert_close(again[:, : i + 1], logits[:, : i + 1])  # code i: no peeking
        if i + 1 < tokens.shape[1]:
            assert not torch.allclose(again[:, i + 1 :], logits[:, i + 1 :])


def test_the_caption_conditions_the_codes_and_the_null_prefix_replaces_it():
    torch.manual_seed(0)
    model = tiny().eval()
    b, other = batch(2), batch(2, seed=1)
    tokens = model.flatten(b["image_tokens"])
    assert not torch.allclose(model(tokens, *conditions(b)), model(tokens, *conditions(other)))
    drop = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(
        model(tokens, *conditions(b), drop=drop), model(tokens, *conditions(other), drop=drop)
    )


def test_a_clip_image_embedding_conditions_the_codes_as_unclips_decoder():
    torch.manual_seed(0)
    model = tiny("clip_image").eval()
    b, other = batch(2), batch(2, seed=1)
    tokens = model.flatten(b["image_tokens"])
    logits = model(tokens, image_embeds=b["image_embeds"])
    assert not torch.allclose(logits, model(tokens, image_embeds=other["image_embeds"]))
    # only the embedding's direction counts, as CLIP compares embeddings by cosine
    torch.testing.assert_close(logits, model(tokens, image_embeds=3 * b["image_embeds"]))
    drop = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(
        model(tokens, image_embeds=b["image_embeds"], drop=drop),
        model(tokens, image_embeds=other["image_embeds"], drop=drop),
    )
    kw = dict(image_embeds=b["image_embeds"], guidance_scale=2.0)
    cached = model.sample(generator=torch.Generator().manual_seed(0), **kw)
    full = model.sample(generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
    assert cached.shape == (2, 16) and torch.equal(cached, full)
    with pytest.raises(ValueError, match=r"needs image_embeds.*\(B, 10\); got \(2, 9\)"):
        model.sample(image_embeds=b["image_embeds"][:, :9])


def reference_sample(model: DALLEPrior, b: dict, scale: float, generator) -> torch.Tensor:
    """Sampling by hand from full teacher-forced forward passes, guidance mixed per step."""
    n = len(b["input_ids"])
    tokens = torch.zeros(n, model.image_len, dtype=torch.long)
    for i in range(model.image_len):
        cond = model(tokens, *conditions(b))[:, i]
        if scale != 1.0:
            uncond = model(tokens, *conditions(b), drop=torch.ones(n, dtype=torch.bool))[:, i]
            cond = uncond + scale * (cond - uncond)
        tokens[:, i] = sample_logits(cond, generator=generator)
    return tokens


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("text_encoder", ["clip", "embed"])
def test_sampling_matches_a_by_hand_loop_over_the_model(text_encoder, scale):
    torch.manual_seed(0)
    model = tiny(text_encoder, grids=(2, 3)).eval()
    b = batch(3)
    got = model.sample(
        *conditions(b), guidance_scale=scale, generator=torch.Generator().manual_seed(7)
    )
    want = reference_sample(model, b, scale, torch.Generator().manual_seed(7))
    assert torch.equal(got, want)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_cached_and_uncached_sampling_give_the_same_codes(scale):
    torch.manual_seed(0)
    model = tiny(grids=(2, 4)).eval()
    b = batch(4)
    kw = dict(guidance_scale=scale, temperature=1.2, top_k=8)
    cached = model.sample(*conditions(b), generator=torch.Generator().manual_seed(3), **kw)
    full = model.sample(
        *conditions(b), generator=torch.Generator().manual_seed(3), use_cache=False, **kw
    )
    assert cached.shape == (4, 20)
    assert torch.equal(cached, full)


def test_guidance_moves_samples_and_greedy_sampling_is_deterministic():
    torch.manual_seed(0)
    model = tiny().eval()
    b = batch(4)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = model.sample(*conditions(b), generator=gen())
    assert not torch.equal(plain, model.sample(*conditions(b), guidance_scale=4.0, generator=gen()))
    greedy = model.sample(*conditions(b), temperature=0.0, generator=gen())
    assert torch.equal(greedy, model.sample(*conditions(b), temperature=0.0))


def test_priming_keeps_the_given_codes_and_callback_sees_each_new_one():
    torch.manual_seed(0)
    model = tiny().eval()
    b = batch(2)
    prime = torch.randint(0, K, (2, 6))
    seen = []
    out = model.sample(
        *conditions(b), prime=prime, callback=lambda i, t: seen.append((i, t.shape[1]))
    )
    assert torch.equal(out[:, :6], prime)
    assert seen == [(i, i + 1) for i in range(6, 16)]
    with pytest.raises(ValueError, match="prime has 16 codes"):
        model.sample(*conditions(b), prime=torch.zeros(2, 16, dtype=torch.long))


def test_missing_or_misshapen_conditions_are_named():
    with pytest.raises(ValueError, match="needs text_states"):
        tiny("clip").training_losses({**batch(), "text_states": None})
    with pytest.raises(ValueError, match="needs input_ids"):
        tiny("embed").sample(None)
    with pytest.raises(ValueError, match="captions of 9 tokens; this prior reads 8"):
        tiny("embed").sample(torch.ones(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="text_encoder='bert'"):
        tiny("bert")


def test_kv_cache_refuses_to_overflow():
    cache = KVCache(layers=1, max_len=4)
    kv = torch.zeros(1, 2, 3, 8)
    cache.append(0, kv, kv)
    cache.advance(3)
    with pytest.raises(ValueError, match="holds 4 positions; 5 asked for"):
        cache.append(0, kv[:, :, :2], kv[:, :, :2])


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    torch.manual_seed(0)
    model = tiny(grids=(2, 4)).eval()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert isinstance(loaded, DALLEPrior)
    b = batch(2)
    a = model.sample(*conditions(b), guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    c = loaded.sample(
        *conditions(b), guidance_scale=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, c)
