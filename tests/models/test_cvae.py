"""CVAE + GSNN: shapes, save -> load, seeding, gradients, the hybrid loss and the prior."""

import pytest
import torch
from model_checks import assert_one_step_trains, assert_same_images, assert_seeded_losses_agree

from t2i.data.text import get_tokenizer
from t2i.models import CVAE, MODELS
from t2i.nn.distributions import gaussian_kl_two

TINY = dict(
    image_size=16, latent_dim=4, channels=(8, 16), text_width=32, text_layers=1, context_length=16
)
CAPTIONS = ["a red square", "a blue circle on the left", "two green triangles", "a square"]
D = 3 * 16 * 16


def tiny_cvae(seed: int = 0, **overrides) -> CVAE:
    torch.manual_seed(seed)
    return CVAE(**{**TINY, **overrides})


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1,
        "input_ids": get_tokenizer(16)(CAPTIONS),
        "caption": CAPTIONS,
    }


def test_registry():
    assert MODELS["cvae"] is CVAE


def test_shapes():
    model = tiny_cvae().eval()
    b = batch()
    c = model.encode_text(b["input_ids"])
    assert c.shape == (4, 32)
    for mu, logvar in (model.prior(c), model.posterior(b["pixel_values"], c)):
        assert mu.shape == logvar.shape == (4, 4)
    images = model.generate(b["input_ids"], generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1
    grids = model.log_images(b, generator=torch.Generator().manual_seed(0))
    assert set(grids) == {"inputs", "reconstructions", "samples"}
    assert all(v.shape == (4, 3, 16, 16) for v in grids.values())
    losses = model.training_losses(b)
    assert {"loss", "recon", "kl", "cvae", "gsnn", "elbo_nats", "bpd"} <= set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


def test_save_load_identical(tmp_path):
    model = tiny_cvae().eval()
    model.save_pretrained(tmp_path)
    loaded = CVAE.from_pretrained(tmp_path).eval()
    ids = batch()["input_ids"]
    a = model.generate(ids, generator=torch.Generator().manual_seed(5))
    b = loaded.generate(ids, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert_same_images(
        model.log_images(batch(), generator=torch.Generator().manual_seed(1)),
        loaded.log_images(batch(), generator=torch.Generator().manual_seed(1)),
    )


def test_seeded_runs_agree():
    assert_seeded_losses_agree(lambda: tiny_cvae(seed=3), batch())


def test_one_step_gradients():
    assert_one_step_trains(tiny_cvae(), batch())


def test_hybrid_loss_interpolates_cvae_and_gsnn():
    base = tiny_cvae(alpha=0.5)
    terms = {}
    for alpha in (0.0, 0.5, 1.0):
        model = tiny_cvae(alpha=alpha)
        model.load_state_dict(base.state_dict())
        torch.manual_seed(7)
        terms[alpha] = model.training_losses(batch())
    parts = terms[0.5]
    torch.testing.assert_close(terms[1.0]["loss"], parts["cvae"] / D)  # alpha=1: pure CVAE
    torch.testing.assert_close(terms[0.0]["loss"], parts["gsnn"] / D)  # alpha=0: pure GSNN
    torch.testing.assert_close(parts["loss"], 0.5 * (parts["cvae"] + parts["gsnn"]) / D)
    torch.testing.assert_close(parts["cvae"], parts["recon"] + parts["kl"])
    assert parts["cvae"] != parts["gsnn"]


def test_kl_term_is_kl_from_posterior_to_conditional_prior():
    model = tiny_cvae().eval()
    b = batch()
    c = model.encode_text(b["input_ids"])
    expected = gaussian_kl_two(*model.posterior(b["pixel_values"], c), *model.prior(c))
    torch.testing.assert_close(model.training_losses(b)["kl"], expected.sum(1).mean())


def test_prior_depends_on_caption():
    model = tiny_cvae().eval()
    ids = batch()["input_ids"]
    mu, _ = model.prior(model.encode_text(ids))
    assert not torch.allclose(mu[0], mu[1])
    same = ids[[0, 0]]
    mu_same, _ = model.prior(model.encode_text(same))
    torch.testing.assert_close(mu_same[0], mu_same[1])


def test_alpha_out_of_range():
    with pytest.raises(ValueError, match="alpha"):
        CVAE(**{**TINY, "alpha": 1.5})
