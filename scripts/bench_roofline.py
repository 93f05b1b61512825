"""The DALL-E prior's sampler against this CPU's compute roofline.

`python scripts/bench_roofline.py --out docs/BENCHMARKS.md`: measures the fp32 matmul peak
(a 2048 x 2048 product, the best of several) on the threads torch uses, then the shipped
DALL-E prior's guided sampling (random weights of the shipped size: dim 256, depth 6, 32
caption states + 64 codes) at batch 1, 16, 64 and 256 images. Each image costs the matmul
FLOPs of its two rows (conditional and unconditional) through the cached transformer: 2 N per
token over 96 tokens, plus causal attention, 2 L d per query-key pair; the roofline is the
peak over that. The fraction says how much of the machine the sampler uses; what is left is
Python and kernel overhead per step, small matmuls, the cache's memory traffic and the
sampling ops. A second table leaves out, in turn, each of the sampler's three CPU measures
(whole-buffer attention for one query, repeated prefixes computed once, the kept cache
memory) at batch 64, interleaved in one process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

import t2i.nn.transformer as T
from t2i.models import DALLEPrior
from t2i.nn.transformer import KVCache, Transformer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside this one
from bench_maskgit import gflop_per_image, write_section  # noqa: E402

ONE_QUERY = T._one_query_by_matmul


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


# The sampler's three CPU measures, each turned off in turn by replacing it with what stood
# before it (a bench-only patch; the library has no switches for them).
MEASURES = {
    "all three": {},
    "without the whole-buffer attention": {"matmul": False},
    "without computing repeated prefixes once": {"dedup": False},
    "without the kept cache memory": {"pool": False},
    "none of them": {"matmul": False, "dedup": False, "pool": False},
}


def set_measures(prior: DALLEPrior, matmul: bool = True, dedup: bool = True, pool: bool = True):
    """Turn the sampler's measures on or off (see MEASURES)."""
    tr = prior.transformer
    T._one_query_by_matmul = ONE_QUERY if matmul else (lambda q: False)
    tr.prefill = (lambda x, c: Transformer.prefill(tr, x, c)) if dedup else tr.forward
    memory = tr.cache_memory if pool else None
    tr.new_cache = lambda n: KVCache(len(tr.blocks), n, memory)


def timed(run, repeats: int) -> float:
    """The median seconds of `repeats` calls of run, after a warm-up."""
    run()  # warm-up: the cache memory is made here and reused by the timed runs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measures_table(prior: DALLEPrior, batch: int, rounds: int) -> list[str]:
    """Each measure's share at `batch`: the variants of MEASURES interleaved, `rounds` rounds
    after a warm-up, medians."""
    states = torch.randn(batch, 32, 128)
    times: dict[str, list[float]] = {name: [] for name in MEASURES}
    for r in range(rounds + 1):
        for name, kw in MEASURES.items():
            set_measures(prior, **kw)
            start = time.perf_counter()
            prior.sample(None, states, guidance_scale=3.0, generator=torch.Generator())
            if r:
                times[name].append(time.perf_counter() - start)
    set_measures(prior)
    base = statistics.median(times["none of them"])
    rows = ["| sampler | s | images/s | speed-up over none |", "|---|---|---|---|"]
    for name, t in times.items():
        m = statistics.median(t)
        rows.append(f"| {name} | {m:.2f} | {batch / m:.1f} | {base / m:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs a batch (median)")
    parser.add_argument(
        "--measures-batch", type=int, default=64, help="the batch of the measures' table"
    )
    parser.add_argument("--out", help="append the tables to this markdown file")
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

        seconds = timed(run, args.repeats)
        rate = b / seconds
        step_ms = 1000 * seconds / prior.image_len
        rows.append(f"| {b} | {seconds:.2f} | {rate:.1f} | {step_ms:.1f} | {rate / roof:.0%} |")
        print(rows[-1], flush=True)
    measures = measures_table(prior, args.measures_batch, rounds=2 * args.repeats)
    lines = [
        "",
        f"## The DALL-E sampler against the roofline ({date.today()}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__})",
        "",
        "`python scripts/bench_roofline.py`: the shipped prior's size at random weights, "
        f"guidance 3, median of {args.repeats} runs after a warm-up. Measured fp32 matmul "
        f"peak {peak:.0f} GFLOP/s (2048 x 2048); a guided image costs {per_image:.2f} GFLOP, "
        f"so the roofline is {roof:.0f} images/s.",
        "",
        "| batch | s | images/s | ms a step (64 steps) | of the roofline |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"The sampler's CPU measures at batch {args.measures_batch}, each left out in turn "
        f"(interleaved, medians of {2 * args.repeats} rounds):",
        "",
        *measures,
    ]
    write_section(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
