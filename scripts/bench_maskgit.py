"""Masked parallel decoding against the KV-cached autoregressive prior, side by side.

`python scripts/bench_maskgit.py --out docs/BENCHMARKS.md` (part of `make bench`). Two tables,
each timed interleaved (A, B, A, B, ...) in one process so that the machine's noise falls on
both sides of a ratio alike:
- a saved pipeline with both routes (--model, default the shipped one when it has the masked
  route): one prompt, 4 images, no reranking, each route at its recorded settings, and the
  masked route at 4 to 24 steps;
- random weights at the shipped size (dim 256, depth 6, codebook 512) and the GPU presets'
  (dim 512, depth 12, codebook 1024) on 8 x 8, 16 x 16 and 32 x 32 code grids: 4 images for
  one caption of 32 CLIP token states, guidance 3 (a batch of 8 rows), the autoregressive
  prior with its KV cache (one code a step), the masked prior in 12 steps.
The masked prior runs N full passes over the sequence where the cached prior runs, in all,
about one: it wins where a step's fixed cost dominates (small grids, a GPU), not where the
FLOPs do (large grids on a CPU). The FLOPs per image are in the table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date

import torch

from t2i.models import DALLEPrior, MaskGITPrior

PROMPT = "a red circle above a blue square"


def interleaved(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn `repeats` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pipeline_rows(model: str | None, repeats: int) -> list[str]:
    """The saved pipeline's two routes at their recorded settings, and the masked route's
    steps."""
    from t2i import load_pipeline

    bundle_dalle = load_pipeline(model, device="cpu", route="dalle")
    masked = load_pipeline(model, device="cpu", route="maskgit")
    for pipe in (bundle_dalle, masked):
        pipe.set_progress_bar_config(disable=True)

    def call(pipe, **kw):
        return lambda: pipe(PROMPT, 4, generator=torch.Generator().manual_seed(0), rerank=0, **kw)

    steps = (4, 8, 12, 16, 24)
    fns = {"dalle": call(bundle_dalle)}
    fns.update({f"maskgit_{n}": call(masked, num_inference_steps=n) for n in steps})
    seconds = interleaved(fns, repeats)
    recorded = masked.sampling_defaults.get("maskgit_num_inference_steps", 12)
    rows = [
        "| route | sequential steps | s for 4 images | speed-up over the DALL-E route |",
        "|---|---|---|---|",
        f"| DALL-E (KV cache, recorded settings) | 64 | {seconds['dalle']:.3f} | 1.0 |",
    ]
    for n in steps:
        s = seconds[f"maskgit_{n}"]
        mark = " (recorded)" if n == recorded else ""
        rows.append(f"| masked, {n} steps{mark} | {n} | {s:.3f} | {seconds['dalle'] / s:.1f}x |")
    return rows


def random_rows(repeats: int) -> list[str]:
    """Random-weight priors at two sizes and three grids."""
    sizes = {
        "shipped (256 x 6)": dict(dim=256, depth=6, heads=8, num_tokens=512),
        "GPU preset (512 x 12)": dict(dim=512, depth=12, heads=8, num_tokens=1024),
    }
    rows = [
        "| size | grid | codes | AR s (KV cache) | masked s (12 steps) | masked / AR speed |"
        " GFLOP/image AR : masked |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, size in sizes.items():
        for grid in (8, 16, 32):
            kw = dict(grid_sizes=[grid], context_length=32, text_encoder="clip", clip_width=128)
            torch.manual_seed(0)
            ar, mg = DALLEPrior(**kw, **size).eval(), MaskGITPrior(**kw, **size).eval()
            states = torch.randn(4, 32, 128)
            fns = {
                "ar": lambda ar=ar, s=states: ar.sample(
                    None, s, guidance_scale=3.0, generator=torch.Generator().manual_seed(0)
                ),
                "mg": lambda mg=mg, s=states: mg.sample(
                    None,
                    s,
                    num_steps=12,
                    guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0),
                ),
            }
            seconds = interleaved(fns, repeats if grid < 32 else 1)
            flops = {k: gflop_per_image(m, grid) for k, m in (("ar", ar), ("mg", mg))}
            rows.append(
                f"| {label} | {grid} x {grid} | {grid * grid} | {seconds['ar']:.2f} | "
                f"{seconds['mg']:.2f} | {seconds['ar'] / seconds['mg']:.2f}x | "
                f"{flops['ar']:.1f} : {flops['mg']:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def gflop_per_image(model: torch.nn.Module, grid: int, steps: int = 12) -> float:
    """Matmul GFLOPs of one guided image (two rows): 2 N per token over the sequence, plus
    attention 4 L d per query-key pair; the cached prior sees each token once with a
    causal half of the pairs, the masked prior the whole sequence at each of `steps`."""
    c = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "transformer" in name)
    t = c.context_length + grid * grid
    one_pass = 2 * n * t + 4 * c.depth * c.dim * t * t
    if isinstance(model, MaskGITPrior):
        return 2 * steps * one_pass / 1e9
    return 2 * (2 * n * t + 2 * c.depth * c.dim * t * t) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved pipeline with the dalle and maskgit routes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="append the tables to this markdown file")
    parser.add_argument("--skip-random", action="store_true", help="the pipeline table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    torch.set_flush_denormal(True)
    cpu = platform.processor() or platform.machine()
    lines = [
        "",
        f"## Masked against autoregressive decoding ({date.today()}, {cpu}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})",
        "",
        f"`python scripts/bench_maskgit.py{' --model ' + args.model if args.model else ''}`: "
        f"one prompt, 4 images, medians of {args.repeats} interleaved runs.",
        "",
    ]
    try:
        lines += pipeline_rows(args.model, args.repeats)
    except (ValueError, FileNotFoundError) as err:
        print(f"pipeline table skipped: {err}", file=sys.stderr)
    if not args.skip_random:
        lines += ["", *random_rows(args.repeats)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
