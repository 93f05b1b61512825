"""unCLIP's pixel decoder: training, deterministic and guided sampling, save / load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import DiffusionDecoder, load_model

D, S = 16, 8


def tiny(**kw) -> DiffusionDecoder:
    args = dict(
        image_size=S,
        embed_dim=D,
        block_out_channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_train_timesteps=100,
    )
    return DiffusionDecoder(**{**args, **kw})


COLOURS = 0.8 * torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]])  # far apart


def batch(n: int = 4, seed: int = 0) -> dict:
    """n flat-coloured images (red, green, blue, white, ...), each with its own embedding."""
    g = torch.Generator().manual_seed(seed)
    colours = COLOURS.repeat(n // 4 + 1, 1)[:n, :, None, None]
    return {
        "pixel_values": colours.expand(n, 3, S, S).clone(),
        "image_embeds": F.normalize(torch.randn(n, D, generator=g), dim=-1),
    }


def draw(model: DiffusionDecoder, b: dict, seed: int = 0, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return model.sample(b["image_embeds"], generator=g, **kw)


def test_one_step_trains_every_parameter():
    torch.manual_seed(0)  # some embeddings dropped, some kept: the null one learns too
    assert_one_step_trains(tiny(cond_drop_prob=0.5), batch(8))


def test_seeded_losses_agree():
    def build():
        torch.manual_seed(0)
        return tiny()

    assert_seeded_losses_agree(build, batch())


def test_the_loss_falls_and_samples_take_the_colour_their_embedding_names():
    torch.manual_seed(0)
    model, b = tiny(cond_drop_prob=0.0), batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = model.training_losses(b)["loss"]
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    model.eval()
    means = draw(model, b, num_inference_steps=20).mean(dim=(2, 3))  # (4, 3) mean colours
    target = b["pixel_values"].mean(dim=(2, 3))
    dist = torch.cdist(means, target)  # each draw is nearest its own image's colour
    assert torch.equal(dist.argmin(dim=1), torch.arange(4)), dist


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_a_noiseless_sampler_is_deterministic_for_a_seed(sampler):
    model = tiny().eval()
    a, b = draw(model, batch(), sampler=sampler), draw(model, batch(), sampler=sampler)
    assert torch.equal(a, b) and a.shape == (4, 3, S, S)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, draw(model, batch(), seed=1, sampler=sampler))


def test_guidance_scale_one_is_plain_conditional_sampling():
    torch.manual_seed(0)
    model = tiny().eval()
    with torch.no_grad():  # make the null embedding differ clearly from the images'
        model.null_embed.normal_()
    plain = draw(model, batch(), guidance_scale=1.0)
    # s = 1 in v_u + s (v_c - v_u) is v_c: the guided batch's conditional half alone
    assert torch.allclose(plain, draw(model, batch(), guidance_scale=1.0 + 1e-7), atol=1e-4)
    assert not torch.allclose(plain, draw(model, batch(), guidance_scale=3.0), atol=1e-3)


def test_bad_shapes_and_settings_are_named():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"image_embeds of shape \(2, 15\)"):
        model.sample(torch.randn(2, 15))
    with pytest.raises(ValueError, match="sampler='heun'"):
        model.sample(torch.randn(2, D), sampler="heun")
    with pytest.raises(ValueError, match="one bool per level"):
        tiny(attention_levels=(False,))
    with pytest.raises(ValueError, match="image_size=9 must halve 1 times"):
        tiny(image_size=9)


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    again = load_model(tmp_path).eval()
    assert isinstance(again, DiffusionDecoder)
    assert torch.equal(
        draw(model, batch(), num_inference_steps=4), draw(again, batch(), num_inference_steps=4)
    )
