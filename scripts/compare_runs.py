"""Two training runs side by side: the largest gaps between their logged losses (relative,
step by step) and between their saved weights (absolute), and whether their learning rates
agree. The FSDP figures of docs/TRAINING.md come from it:

    pytest -m slow tests/training/test_fsdp.py --basetemp=/tmp/fsdp
    python scripts/compare_runs.py /tmp/fsdp/prior0/two /tmp/fsdp/prior0/one
    python scripts/compare_runs.py /tmp/fsdp/ldm0/two /tmp/fsdp/ldm0/one
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from t2i.training import read_metrics

WEIGHTS = "diffusion_pytorch_model.safetensors"


def compare(a: Path, b: Path) -> dict[str, float | int | bool]:
    """Steps compared, the largest relative loss gap, equal learning rates, the largest
    weight gap, and the number of weights (a's and b's must match)."""
    ra, rb = read_metrics(a / "logs" / "metrics.csv"), read_metrics(b / "logs" / "metrics.csv")
    ra, rb = [r for r in ra if "loss" in r], [r for r in rb if "loss" in r]
    if [r["step"] for r in ra] != [r["step"] for r in rb]:
        raise ValueError(f"{a} and {b} logged other steps")
    wa, wb = load_file(a / "model" / WEIGHTS), load_file(b / "model" / WEIGHTS)
    if wa.keys() != wb.keys():
        raise ValueError(f"{a} and {b} saved other weights")
    pairs = list(zip(ra, rb, strict=True))
    return {
        "steps": len(ra),
        "loss_rel_gap": max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in pairs),
        "lr_equal": all(x["lr"] == y["lr"] for x, y in pairs),
        "weight_gap": max(float((wa[k] - wb[k]).abs().max()) for k in wa),
        "parameters": sum(v.numel() for v in wa.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    try:
        figures = compare(args.run_a, args.run_b)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in figures.items():
        print(f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
