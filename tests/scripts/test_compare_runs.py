"""scripts/compare_runs.py: the gaps between two runs' logged losses and saved weights."""

from __future__ import annotations

import pytest
import torch
from conftest import load_script
from safetensors.torch import save_file

compare_runs = load_script("compare_runs")


def fake_run(folder, losses, weight, lr=1e-3):
    (folder / "logs").mkdir(parents=True)
    (folder / "model").mkdir()
    rows = "".join(f"{i + 1},{loss},{lr}\n" for i, loss in enumerate(losses))
    (folder / "logs" / "metrics.csv").write_text("step,loss,lr\n" + rows)
    save_file({"w": torch.full((2, 2), weight)}, str(folder / "model" / compare_runs.WEIGHTS))
    return folder


def test_the_largest_loss_and_weight_gaps_are_reported(tmp_path):
    a = fake_run(tmp_path / "a", [2.0, 1.0], 0.5)
    b = fake_run(tmp_path / "b", [2.0, 1.1], 0.75)
    figures = compare_runs.compare(a, b)
    assert figures["steps"] == 2 and figures["lr_equal"] and figures["parameters"] == 4
    assert figures["loss_rel_gap"] == pytest.approx(0.1 / 1.1)
    assert figures["weight_gap"] == pytest.approx(0.25)
    c = fake_run(tmp_path / "c", [2.0], 0.5)
    with pytest.raises(ValueError, match="logged other steps"):
        compare_runs.compare(a, c)
