"""The masked prior: the loss on masked codes only, bidirectional attention, guidance,
per-image generators, inpainting and N-step sampling."""

from __future__ import annotations

import math

import pytest
import torch
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import DALLEPrior, MaskGITPrior, build_model, load_model

L, K, WIDTH = 8, 16, 12


def tiny(text_encoder: str = "clip", grids=(4,), **kw) -> MaskGITPrior:
    torch.manual_seed(0)
    args = dict(
        num_tokens=K,
        grid_sizes=list(grids),
        context_length=L,
        text_encoder=text_encoder,
        clip_width=WIDTH,
        text_vocab_size=100,
        dim=32,
        depth=2,
        heads=4,
    )
    return MaskGITPrior(**{**args, **kw}).eval()


def batch(n: int = 6, grids=(4,), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, L), generator=g)
    ids[:, 5:] = 0
    levels = tuple(torch.randint(0, K, (n, s, s), generator=g) for s in grids)
    return {
        "image_tokens": levels[0] if len(levels) == 1 else levels,
        "input_ids": ids,
        "text_states": torch.randn(n, L, WIDTH, generator=g),
    }


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("text_encoder", ["clip", "embed"])
def test_one_step_trains_every_parameter(text_encoder):
    model = tiny(text_encoder, cond_drop_prob=0.5).train()
    torch.manual_seed(0)  # some captions dropped, some kept: the null prefix learns too
    assert_one_step_trains(model, batch(16))


def test_seeded_losses_agree():
    assert_seeded_losses_agree(lambda: tiny().train(), batch())


def test_the_mask_token_is_one_past_the_codebook_and_only_the_codebook_is_predicted():
    model = tiny()
    assert model.mask_token_id == K
    assert model.image_embed.num_embeddings == K + 1 and model.image_head.out_features == K
    b = batch()
    tokens = model.flatten(b["image_tokens"])
    assert model(tokens, text_states=b["text_states"]).shape == (6, 16, K)


def test_masking_follows_the_cosine_schedule_and_masks_at_least_one_code():
    model = tiny(grids=(8,))
    tokens = torch.randint(0, K, (4000, 64))
    torch.manual_seed(1)
    corrupted, masked = model.mask_codes(tokens)
    assert torch.equal(corrupted == K, masked)  # masked codes, and only they, are the mask id
    assert torch.equal(corrupted[~masked], tokens[~masked])
    assert masked.sum(1).min() >= 1
    # E[cos(pi/2 r)] = 2/pi for r ~ U(0, 1): the share of codes a training step masks
    assert masked.float().mean().item() == pytest.approx(2 / math.pi, abs=0.02)


def test_the_loss_is_the_cross_entropy_of_the_masked_positions_by_hand():
    model = tiny().train()
    b = batch()
    tokens = model.flatten(b["image_tokens"])
    torch.manual_seed(5)
    corrupted, masked = model.mask_codes(tokens)
    model.mask_codes = lambda t: (t.masked_fill(masked, K), masked)  # this mask, every call
    model.config.cond_drop_prob = 0.0  # no caption drop: the prefix is the caption's
    got = model.training_losses(b)["loss"]
    logits = model(corrupted, text_states=b["text_states"])
    want = torch.nn.functional.cross_entropy(logits[masked], tokens[masked])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    everywhere = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    assert got.item() != pytest.approx(everywhere.item(), rel=1e-3)  # not all positions
    out = model.training_losses(b)
    assert out["masked_bits_per_token"].item() == pytest.approx(
        out["masked_ce"].item() / math.log(2)
    )


def test_attention_is_bidirectional_unlike_the_dalle_priors():
    """A change in the last code moves the logits of the first in the masked prior; in the
    causal DALL-E prior it cannot."""
    model = tiny()
    b = batch()
    tokens = model.flatten(b["image_tokens"])
    later = tokens.clone()
    later[:, -1] = (later[:, -1] + 1) % K
    first = model(tokens, text_states=b["text_states"])[:, 0]
    moved = model(later, text_states=b["text_states"])[:, 0]
    assert not torch.allclose(first, moved)
    causal = DALLEPrior(**{k: v for k, v in model.config.items() if not k.startswith("_")})
    assert all(block.attn.causal for block in causal.transformer.blocks)
    assert not any(block.attn.causal for block in model.transformer.blocks)


def test_the_caption_conditions_the_codes_and_the_drop_replaces_it_by_the_null_prefix():
    model = tiny()
    b = batch()
    tokens = torch.full((6, 16), K)
    one = model(tokens, text_states=b["text_states"])
    other = model(tokens, text_states=batch(seed=1)["text_states"])
    assert not torch.allclose(one, other)
    drop = torch.ones(6, dtype=torch.bool)
    assert torch.allclose(
        model(tokens, text_states=b["text_states"], drop=drop),
        model(tokens, text_states=batch(seed=1)["text_states"], drop=drop),
    )


@pytest.mark.parametrize("steps", [1, 4, 12])
def test_sampling_fills_every_code_from_the_codebook_in_n_steps(steps):
    model = tiny()
    seen = []
    codes = model.sample(
        text_states=batch()["text_states"],
        num_steps=steps,
        guidance_scale=2.0,
        generator=seeded(0),
        callback=lambda i, t: seen.append((t == K).sum().item()),
    )
    assert codes.shape == (6, 16) and codes.min() >= 0 and codes.max() < K
    assert len(seen) == steps and seen[-1] == 0
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))  # fewer masked each step


def test_seeded_sampling_agrees_and_another_seed_differs():
    model = tiny()
    s = batch()["text_states"]
    a = model.sample(text_states=s, num_steps=4, generator=seeded(0))
    assert torch.equal(a, model.sample(text_states=s, num_steps=4, generator=seeded(0)))
    assert not torch.equal(a, model.sample(text_states=s, num_steps=4, generator=seeded(1)))


def test_a_generator_per_row_makes_each_row_independent_of_the_batch():
    model = tiny()
    s = batch()["text_states"]
    together = model.sample(
        text_states=s[:3], num_steps=4, guidance_scale=2.0, generator=[seeded(i) for i in (7, 8, 9)]
    )
    alone = model.sample(text_states=s[1:2], num_steps=4, guidance_scale=2.0, generator=[seeded(8)])
    assert torch.equal(together[1:2], alone)
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        model.sample(text_states=s[:3], generator=[seeded(0), seeded(1)])


def test_greedy_sampling_is_deterministic_and_guidance_changes_it():
    model = tiny()
    s = batch()["text_states"]
    a = model.sample(text_states=s, num_steps=4, temperature=0, choice_temperature=0)
    b = model.sample(text_states=s, num_steps=4, temperature=0, choice_temperature=0)
    c = model.sample(
        text_states=s, num_steps=4, temperature=0, choice_temperature=0, guidance_scale=4.0
    )
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_one_draws_the_argmax_of_the_step():
    """With top_k=1 every drawn code is the most likely one given the step's input: at one
    step, the argmax of the all-masked logits."""
    model = tiny()
    s = batch()["text_states"]
    codes = model.sample(text_states=s, num_steps=1, top_k=1, generator=seeded(0))
    want = model(torch.full((6, 16), K), text_states=s).argmax(-1)
    assert torch.equal(codes, want)


def test_a_negative_prompt_replaces_the_null_prefix_in_guidance():
    model = tiny()
    s = batch()["text_states"]
    other = batch(seed=2)["text_states"]
    kw = dict(text_states=s, num_steps=4, temperature=0, choice_temperature=0)
    plain = model.sample(**kw, guidance_scale=3.0)
    negative = model.sample(**kw, guidance_scale=3.0, negative_text_states=other)
    assert not torch.equal(plain, negative)
    # at guidance 1 only the conditional branch is read: the negative prompt has no effect
    assert torch.equal(model.sample(**kw), model.sample(**kw, negative_text_states=other))


def test_inpainting_keeps_the_kept_codes_and_redraws_the_rest():
    model = tiny()
    s = batch()["text_states"]
    init = model.flatten(batch()["image_tokens"])
    keep = torch.zeros(6, 16, dtype=torch.bool)
    keep[:, :8] = True  # the top half of the grid stays
    out = model.sample(text_states=s, num_steps=4, init_tokens=init, keep=keep, generator=seeded(0))
    assert torch.equal(out[:, :8], init[:, :8])
    assert (out[:, 8:] != init[:, 8:]).any() and out.max() < K
    with pytest.raises(ValueError, match="both init_tokens and keep"):
        model.sample(text_states=s, init_tokens=init)
    with pytest.raises(ValueError, match="nothing is left to draw"):
        model.sample(text_states=s, init_tokens=init, keep=torch.ones(6, 16, dtype=torch.bool))


def test_the_kept_codes_condition_what_is_drawn():
    """Inpainting reads the kept codes: other kept codes, other codes drawn (greedy)."""
    model = tiny()
    s = batch()["text_states"]
    keep = torch.zeros(6, 16, dtype=torch.bool)
    keep[:, :8] = True
    kw = dict(text_states=s, num_steps=4, keep=keep, temperature=0, choice_temperature=0)
    a = model.sample(init_tokens=model.flatten(batch(seed=0)["image_tokens"]), **kw)
    b = model.sample(init_tokens=model.flatten(batch(seed=3)["image_tokens"]), **kw)
    assert not torch.equal(a[:, 8:], b[:, 8:])


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    model = tiny(grids=(2, 4))
    model.save_pretrained(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.bin"))  # safetensors only
    back = load_model(tmp_path / "m")
    assert isinstance(back, MaskGITPrior)
    s = batch()["text_states"]
    a = model.sample(text_states=s, num_steps=3, generator=seeded(0))
    b = back.sample(text_states=s, num_steps=3, generator=seeded(0))
    assert torch.equal(a, b)


def test_presets_and_bad_configs_are_named():
    model = build_model({"type": "maskgit_prior", "preset": "maskgit-tiny", "num_tokens": 32})
    assert isinstance(model, MaskGITPrior) and model.config.dim == 64
    assert model.mask_token_id == 32
    with pytest.raises(ValueError, match="text_encoder='clip_image'"):
        MaskGITPrior(text_encoder="clip_image")
    with pytest.raises(ValueError, match="attention='flash'"):
        MaskGITPrior(attention="flash")
    with pytest.raises(ValueError, match="temperature=-1"):
        tiny().sample(text_states=batch()["text_states"], temperature=-1)
