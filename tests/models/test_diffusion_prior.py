"""The unCLIP diffusion prior: training, deterministic and guided sampling, save / load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import DiffusionPrior, load_model

D, L, WIDTH = 16, 6, 8


def tiny(**kw) -> DiffusionPrior:
    args = dict(
        embed_dim=D,
        clip_width=WIDTH,
        context_length=L,
        dim=32,
        depth=2,
        heads=4,
        num_train_timesteps=100,
    )
    return DiffusionPrior(**{**args, **kw})


def batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image_embeds": F.normalize(torch.randn(n, D, generator=g), dim=-1),
        "text_embeds": F.normalize(torch.randn(n, D, generator=g), dim=-1),
        "text_states": torch.randn(n, L, WIDTH, generator=g),
    }


def draw(model: DiffusionPrior, b: dict, seed: int = 0, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return model.sample(b["text_embeds"], b["text_states"], generator=g, **kw)


def test_one_step_trains_every_parameter():
    torch.manual_seed(0)  # some captions dropped, some kept: the null conditions learn too
    assert_one_step_trains(tiny(cond_drop_prob=0.5), batch(16))


def test_seeded_losses_agree():
    def build():
        torch.manual_seed(0)
        return tiny()

    assert_seeded_losses_agree(build, batch())


def test_the_loss_falls_and_samples_find_the_paired_embeddings():
    torch.manual_seed(0)
    model, b = tiny(cond_drop_prob=0.0), batch(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        loss = model.training_losses(b)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    model.eval()
    cos = (draw(model, b, num_inference_steps=10) * b["image_embeds"]).sum(-1)  # (8,)
    # each caption's sample lands on its own image embedding, not on another caption's
    others = (draw(model, b, num_inference_steps=10) @ b["image_embeds"].t()).fill_diagonal_(-1)
    assert cos.min() > 0.8 and (cos > others.max(dim=1).values).all(), (cos, others)


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_a_noiseless_sampler_is_deterministic_for_a_seed(sampler):
    model = tiny().eval()
    a, b = draw(model, batch(), sampler=sampler), draw(model, batch(), sampler=sampler)
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(a)), atol=1e-5)
    assert not torch.allclose(a, draw(model, batch(), seed=1, sampler=sampler))


def test_guidance_scale_one_is_plain_conditional_sampling():
    torch.manual_seed(0)
    model = tiny().eval()
    with torch.no_grad():  # make the null conditions differ clearly from the captions
        model.null_text_embed.normal_()
        model.null_states.normal_()
    plain = draw(model, batch(), guidance_scale=1.0)
    # s = 1 in x_u + s (x_c - x_u) is x_c: the guided batch's conditional half alone
    assert torch.allclose(plain, draw(model, batch(), guidance_scale=1.0 + 1e-7), atol=1e-5)
    assert not torch.allclose(plain, draw(model, batch(), guidance_scale=3.0), atol=1e-3)


def test_candidates_keep_the_one_closest_to_the_text_embedding():
    model, b = tiny().eval(), batch(3)
    best = draw(model, b, num_candidates=4)
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(3).repeat_interleave(4)
    every = model.sample(b["text_embeds"][ids], b["text_states"][ids], generator=g).view(3, 4, D)
    sims = torch.einsum("bkd,bd->bk", every, b["text_embeds"])
    assert torch.allclose(best, every[torch.arange(3), sims.argmax(1)], atol=1e-6)


def test_misshapen_conditions_and_unknown_samplers_are_named():
    model, b = tiny().eval(), batch(2)
    with pytest.raises(ValueError, match=r"text_states of shape \(2, 5, 8\)"):
        model.sample(b["text_embeds"], b["text_states"][:, :5])
    with pytest.raises(ValueError, match=r"text_embeds of shape \(2, 15\)"):
        model.sample(b["text_embeds"][:, :15], b["text_states"])
    with pytest.raises(ValueError, match="sampler='heun'"):
        model.sample(b["text_embeds"], b["text_states"], sampler="heun")


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    again = load_model(tmp_path).eval()
    assert isinstance(again, DiffusionPrior)
    assert torch.equal(draw(model, batch()), draw(again, batch()))
