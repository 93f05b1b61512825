"""Gumbel-softmax, Gumbel-max, the temperature schedule and the categorical VAE."""

import math

import pytest
import torch
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import MODELS, CategoricalVAE
from t2i.nn.distributions import (
    TemperatureSchedule,
    categorical_kl_uniform,
    code_perplexity,
    gumbel_max,
    gumbel_softmax,
)

TINY = dict(image_size=16, num_latents=6, num_classes=5, channels=(8, 16), anneal_rate=0.1)


def tiny_model(seed: int = 0, **overrides) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(**{**TINY, **overrides})


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1}


def test_gumbel_max_matches_categorical():
    probs = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4])
    n = 20_000
    draws = gumbel_max(probs.log().expand(n, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).double()
    expected = n * probs.double()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = len(probs) - 1
    p_value = torch.special.gammaincc(torch.tensor(dof / 2), chi2 / 2)  # Chi2(dof) survival
    assert p_value > 1e-3, (chi2, p_value)
    assert chi2 < 18.467  # the Chi2(4) critical value at p = 0.001, for readers without scipy


def test_gumbel_max_reproducible_with_generator():
    logits = torch.randn(100, 7)
    a = gumbel_max(logits, torch.Generator().manual_seed(1))
    b = gumbel_max(logits, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_samples_approach_one_hot_as_tau_falls():
    logits = torch.randn(10, generator=torch.Generator().manual_seed(0)).expand(20_000, -1)
    means = []
    for tau in (5.0, 1.0, 0.5, 0.1, 0.01):
        y = gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(y.sum(-1), torch.ones(len(y)))
        means.append(y.max(-1).values.mean().item())
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=True)), means
    # E[1 - max] ~ tau * ln 2 for small tau (the top-two Gumbel gap is ~ Exp(1)): ~0.993 here
    assert means[-1] > 0.99, means


def test_straight_through_is_one_hot_with_gradient():
    logits = torch.randn(8, 6, requires_grad=True)
    y = gumbel_softmax(logits, 0.7, hard=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y.detach(), torch.nn.functional.one_hot(y.argmax(-1), 6).float())
    soft = gumbel_softmax(logits, 0.7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y.argmax(-1), soft.argmax(-1))
    (y * torch.randn(8, 6)).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_schedule_decays_to_floor():
    schedule = TemperatureSchedule(tau0=1.0, tau_min=0.5, rate=1e-3)
    taus = [schedule(s).item() for s in range(0, 2000, 100)]
    assert taus[0] == 1.0
    assert all(a >= b for a, b in zip(taus[:-1], taus[1:], strict=True)) and taus[1] < taus[0]
    assert taus[-1] == 0.5 and schedule(10**6).item() == 0.5


def test_kl_to_uniform_and_perplexity():
    logits = torch.randn(3, 4, 5)
    q = torch.distributions.Categorical(logits=logits)
    uniform = torch.distributions.Categorical(logits=torch.zeros(3, 4, 5))
    torch.testing.assert_close(
        categorical_kl_uniform(logits), torch.distributions.kl_divergence(q, uniform)
    )
    assert math.isclose(code_perplexity(torch.full((2, 3, 5), 0.2)).item(), 5.0, rel_tol=1e-5)
    assert code_perplexity(torch.nn.functional.one_hot(torch.zeros(2, 3).long(), 5).float()) == 1


def test_registry():
    assert MODELS["categorical_vae"] is CategoricalVAE


def test_model_shapes():
    model = tiny_model().eval()
    x = batch()["pixel_values"]
    assert model.encode(x).shape == (4, 6, 5)
    assert model.kl_per_dim(x).shape == (4, 6)
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 3, 16, 16)
    grids = model.log_images(batch(), generator=torch.Generator().manual_seed(0))
    assert set(grids) == {"inputs", "reconstructions", "samples"}
    assert all(v.shape[1:] == (3, 16, 16) and v.abs().max() <= 1 for v in grids.values())
    losses = model.training_losses(batch())
    assert {"loss", "recon", "kl", "tau", "perplexity"} <= set(losses)
    assert all(v.dim() == 0 for v in losses.values())
    assert 1.0 <= losses["perplexity"].item() <= 5.0


def test_step_counter_anneals_in_training_only_and_is_saved(tmp_path):
    model = tiny_model()
    model.eval()
    assert model.training_losses(batch())["tau"].item() == 1.0
    assert model.step.item() == 0
    model.train()
    taus = [model.training_losses(batch())["tau"].item() for _ in range(3)]
    assert model.step.item() == 3
    assert taus[0] == 1.0 and taus[1] < taus[0] and taus[2] < taus[1]
    model.save_pretrained(tmp_path)
    loaded = CategoricalVAE.from_pretrained(tmp_path)
    assert loaded.step.item() == 3
    torch.testing.assert_close(loaded.tau, model.tau)


def test_save_load_identical(tmp_path):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    loaded = CategoricalVAE.from_pretrained(tmp_path).eval()
    a = model.log_images(batch(), generator=torch.Generator().manual_seed(2))
    b = loaded.log_images(batch(), generator=torch.Generator().manual_seed(2))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_seeded_runs_agree():
    assert_seeded_losses_agree(lambda: tiny_model(seed=5, hard=True), batch())


@pytest.mark.parametrize("hard", [False, True])
def test_one_step_gradients(hard):
    assert_one_step_trains(tiny_model(hard=hard), batch())
