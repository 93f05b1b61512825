"""The gated PixelCNN: causality without a blind spot, conditioning, seeded sampling, learning a
class-conditional pattern, and the two-level VQ-VAE-2 prior."""

from __future__ import annotations

import pytest
import torch
from model_checks import assert_one_step_trains, assert_seeded_losses_agree

from t2i.models import HierarchicalPixelCNN, PixelCNN


def tiny(seed: int = 0, **overrides) -> PixelCNN:
    torch.manual_seed(seed)
    options = dict(num_tokens=6, grid_size=5, channels=16, num_layers=4, kernel_size=3)
    return PixelCNN(**{**options, **overrides})


def codes(n: int = 3, side: int = 5, k: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n, side, side), generator=torch.Generator().manual_seed(seed))


def test_each_position_sees_exactly_the_positions_before_it():
    model = tiny(num_layers=5).double()
    x = model.embed(codes(1)).permute(0, 3, 1, 2).detach().requires_grad_(True)
    v, h = x, x
    for layer in model.layers:
        v, h = layer(v, h, None)
    logits = model.head(h)  # (1, K, 5, 5)
    for i in range(5):
        for j in range(5):
            (grad,) = torch.autograd.grad(logits[0, :, i, j].sum(), x, retain_graph=True)
            seen = grad.abs().sum(1)[0] > 0  # (5, 5)
            before = torch.zeros(5, 5, dtype=torch.bool)
            before[:i] = True
            before[i, :j] = True
            assert torch.equal(seen, before), (i, j)  # no leak of the future, no blind spot


def test_logits_shape_and_one_step():
    model = tiny()
    assert model(codes()).shape == (3, 6, 5, 5)
    assert_one_step_trains(model, {"image_tokens": codes()})
    assert_seeded_losses_agree(lambda: tiny(seed=2), {"image_tokens": codes()})


def test_conditions_change_the_logits_and_a_missing_one_is_named():
    model = tiny(num_classes=3, text_width=8, text_layers=1, vocab_size=50, context_length=6)
    grids = codes()
    ids = torch.randint(1, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    base = model(grids, model.condition(labels, ids))
    assert not torch.allclose(base, model(grids, model.condition(labels.flip(0), ids)))
    assert not torch.allclose(base, model(grids, model.condition(labels, ids.flip(0))))
    with pytest.raises(ValueError, match="input_ids"):
        model.condition(labels, None)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny(num_classes=2).eval()
    labels = torch.tensor([0, 1, 1])
    a = model.sample(3, labels, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, labels, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 5, 5) and torch.equal(a, b)
    greedy = model.sample(3, labels, temperature=0.0)
    top1 = model.sample(3, labels, top_k=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy, top1)


def test_learns_a_class_conditional_pattern():
    """Class 0 is a checkerboard of codes 1 and 2, class 1 a vertical gradient of codes."""
    side = 4
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    patterns = torch.stack([1 + (rows + cols) % 2, rows + 2])  # (2, 4, 4), codes 1..5
    model = tiny(grid_size=side, num_classes=2, num_layers=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.tensor([0, 1] * 8)
    for _ in range(60):
        loss = model.training_losses({"image_tokens": patterns[labels], "class_labels": labels})
        optimizer.zero_grad()
        loss["loss"].backward()
        optimizer.step()
    assert float(loss["loss"].detach()) < 0.05
    drawn = model.eval().sample(4, torch.tensor([0, 1, 0, 1]), temperature=0.0)
    assert torch.equal(drawn, patterns[torch.tensor([0, 1, 0, 1])])


def tiny_hierarchy(seed: int = 0) -> HierarchicalPixelCNN:
    torch.manual_seed(seed)
    return HierarchicalPixelCNN(
        num_tokens=6, grid_sizes=(2, 4), channels=16, num_layers=3, kernel_size=3
    )


def hierarchy_batch() -> dict:
    return {"image_tokens": (codes(3, 2), codes(3, 4, seed=1))}


def test_hierarchical_prior_conditions_the_bottom_on_the_top(tmp_path):
    model = tiny_hierarchy().eval()
    top, bottom = hierarchy_batch()["image_tokens"]
    cond = model.bottom.condition(cond_tokens=top)
    other = model.bottom.condition(cond_tokens=(top + 1) % 6)
    assert not torch.allclose(model.bottom(bottom, cond), model.bottom(bottom, other))
    losses = model.training_losses(hierarchy_batch())
    torch.testing.assert_close(losses["loss"], losses["nll_top"] + losses["nll_bottom"])
    drawn = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert [t.shape for t in drawn] == [(3, 2, 2), (3, 4, 4)]
    model.save_pretrained(tmp_path)
    loaded = HierarchicalPixelCNN.from_pretrained(tmp_path).eval()
    again = loaded.sample(3, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(drawn, again, strict=True))
    assert_one_step_trains(tiny_hierarchy(), hierarchy_batch())
