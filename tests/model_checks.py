"""Checks every trainable t2i model must pass (DESIGN.md's contracts), shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


def assert_one_step_trains(model: torch.nn.Module, batch: dict) -> None:
    """One optimizer step: a finite loss, a nonzero gradient on every parameter, weights move."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model.training_losses(batch)["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    optimizer.step()
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not move"


def assert_seeded_losses_agree(build: Callable[[], torch.nn.Module], batch: dict) -> None:
    """Two models built and run under the same seeds give identical loss terms."""
    runs = []
    for _ in range(2):
        model = build()
        torch.manual_seed(4)
        runs.append(model.training_losses(batch))
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def assert_same_images(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Two `log_images` results are identical, key by key."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
