"""The DALL-E prior's sampler against this CPU's compute roofline.

`python scripts/bench_roofline.py --out docs/BENCHMARKS.md`: measures the fp32 matmul peak
(a 2048 x 2048 product, the best of several) on the threads torch uses, then the shipped
DALL-E prior's guided sampling (random weights of the shipped size: dim 256, depth 6, 32
caption states + 64 codes) at batch 1, 16, 64 and 256 images. Each image costs the matmul
FLOPs of its two rows (conditional and unconditional) through the cached transformer: 2 N per
token over 96 tokens, plus causal attention, 2 L d per query-key pair; the roofline is the
peak over that. The fraction says how much of the machine the sampler uses; what is left is
Python and kernel overhead per step, small matmuls and the sampling ops.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from t2i.models import DALLEPrior

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside this one
from bench_maskgit import gflop_per_image, write_section  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """The best fp32 GFLOP/s of an n x n matmul over `repeats` runs, after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--out", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    prior = DALLEPrior(num_tokens=512, grid_sizes=[8], dim=256, depth=6, heads=8).eval()
    per_image = gflop_per_image(prior, 8)
    peak = matmul_peak()
    roof = peak / per_image
    rows = []
    for b in args.batches:
        states = torch.randn(b, 32, 128)

        def run(states: torch.Tensor = states) -> None:
            prior.sample(None, states, guidance_scale=3.0, generator=torch.Generator())

        run()  # warm-up
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        rate = b / seconds
        step_ms = 1000 * seconds / prior.image_len
        rows.append(f"| {b} | {seconds:.2f} | {rate:.1f} | {step_ms:.1f} | {rate / roof:.0%} |")
        print(rows[-1], flush=True)
    lines = [
        "",
        f"## The DALL-E sampler against the roofline ({date.today()}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__})",
        "",
        "`python scripts/bench_roofline.py`: the shipped prior's size at random weights, "
        f"guidance 3. Measured fp32 matmul peak {peak:.0f} GFLOP/s (2048 x 2048); a guided "
        f"image costs {per_image:.2f} GFLOP, so the roofline is {roof:.0f} images/s.",
        "",
        "| batch | s | images/s | ms a step (64 steps) | of the roofline |",
        "|---|---|---|---|---|",
        *rows,
    ]
    write_section(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
