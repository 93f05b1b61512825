"""Masked parallel decoding against the KV-cached autoregressive prior, side by side.

`python scripts/bench_maskgit.py --out docs/BENCHMARKS.md` (part of `make bench-peers`). Two tables,
each timed interleaved (A, B, A, B, ...) in one process so that the machine's noise falls on
both sides of a ratio alike:
- a saved pipeline with both routes (--model, default the shipped one when it has the masked
  route): one prompt, 4 images, no reranking, each route at its recorded settings, and the
  masked route at 4 to 24 steps;
- random weights at the shipped size (dim 256, depth 6, codebook 512) and the GPU presets'
  (dim 512, depth 12, codebook 1024) on 8 x 8, 16 x 16 and 32 x 32 code grids: 4 images for
  one caption of 32 CLIP token states, guidance 3 (a batch of 8 rows), the autoregressive
  prior with its KV cache (one code a step), the masked prior in 12 steps (32 x 32: one
  run each, no warm-up);
- the masked prior against diffusers' parts for the same job, aMUSEd's `UVit2DModel` (the
  caption by cross-attention) with `AmusedScheduler`, at matched width, depth, heads and
  steps: sampling, and a training step.
The masked prior runs N full passes over the sequence where the cached prior runs, in all,
about one: it wins where a step's fixed cost dominates (small grids, a GPU), not where the
FLOPs do (large grids on a CPU). The FLOPs per image are in the table.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from datetime import date

import torch
import torch.nn.functional as F

from t2i.models import DALLEPrior, MaskGITPrior

PROMPT = "a red circle above a blue square"


def interleaved(
    fns: dict[str, object], repeats: int, warm: bool = True, device: str = "cpu"
) -> dict[str, float]:
    """Median seconds of each function, run in turn `repeats` times after one warm-up each
    (none when not `warm`: for runs of a minute, whose first-call costs are noise); on a
    GPU each run ends when the device has finished its work."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for fn in fns.values() if warm else ():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pipeline_rows(model: str | None, repeats: int, device: str = "cpu") -> list[str]:
    """The saved pipeline's two routes at their recorded settings, and the masked route's
    steps, on `device` (fp32)."""
    from t2i import load_pipeline

    bundle_dalle = load_pipeline(model, device=device, route="dalle")
    masked = load_pipeline(model, device=device, route="maskgit")
    for pipe in (bundle_dalle, masked):
        pipe.set_progress_bar_config(disable=True)

    def call(pipe, **kw):
        def run():
            generator = torch.Generator(device).manual_seed(0)
            return pipe(PROMPT, 4, generator=generator, rerank=0, **kw)

        return run

    steps = (4, 8, 12, 16, 24)
    fns = {"dalle": call(bundle_dalle)}
    fns.update({f"maskgit_{n}": call(masked, num_inference_steps=n) for n in steps})
    seconds = interleaved(fns, repeats, device=device)
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


SIZES = {
    "shipped": ("shipped (256 x 6)", dict(dim=256, depth=6, heads=8, num_tokens=512)),
    "gpu": ("GPU preset (512 x 12)", dict(dim=512, depth=12, heads=8, num_tokens=1024)),
}


def random_rows(repeats: int, names: list[str], device: str = "cpu") -> list[str]:
    """Random-weight priors at the named sizes and three grids, on `device` (fp32)."""
    sizes = dict(SIZES[name] for name in names)
    rows = [
        "| size | grid | codes | AR s (KV cache) | masked s (12 steps) | masked / AR speed |"
        " GFLOP/image AR : masked |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, size in sizes.items():
        for grid in (8, 16, 32):
            kw = dict(grid_sizes=[grid], context_length=32, text_encoder="clip", clip_width=128)
            torch.manual_seed(0)
            ar = DALLEPrior(**kw, **size).to(device).eval()
            mg = MaskGITPrior(**kw, **size).to(device).eval()
            states = torch.randn(4, 32, 128, device=device)
            fns = {
                "ar": lambda ar=ar, s=states: ar.sample(
                    None, s, guidance_scale=3.0, generator=torch.Generator(device).manual_seed(0)
                ),
                "mg": lambda mg=mg, s=states: mg.sample(
                    None,
                    s,
                    num_steps=12,
                    guidance_scale=3.0,
                    generator=torch.Generator(device).manual_seed(0),
                ),
            }
            slow = grid == 32 and torch.device(device).type == "cpu"  # a minute a run
            seconds = (
                interleaved(fns, 1, False) if slow else interleaved(fns, repeats, True, device)
            )
            flops = {k: gflop_per_image(m, grid) for k, m in (("ar", ar), ("mg", mg))}
            rows.append(
                f"| {label} | {grid} x {grid} | {grid * grid} | {seconds['ar']:.2f} | "
                f"{seconds['mg']:.2f} | {seconds['ar'] / seconds['mg']:.2f}x | "
                f"{flops['ar']:.1f} : {flops['mg']:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def uvit_rows(repeats: int) -> list[str]:
    """t2i's masked prior against diffusers' parts for the same job (aMUSEd's
    `UVit2DModel`, the caption by cross-attention, and `AmusedScheduler`), at matched width,
    depth, heads and steps: sampling 4 images in 12 guided steps, and a training step."""
    from diffusers import AmusedScheduler, UVit2DModel

    torch.manual_seed(0)
    uvit = UVit2DModel(  # width 256, 6 layers of 8 heads over an 8 x 8 grid of 512 codes
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=1024,
        block_out_channels=256,
        in_channels=256,
        num_res_blocks=1,
        block_num_heads=8,
        vocab_size=513,
        codebook_size=512,
        encoder_hidden_size=128,
        cond_embed_dim=128,
        micro_cond_encode_dim=64,
        micro_cond_embed_dim=320,
        sample_size=8,
    )
    ours = MaskGITPrior(num_tokens=512, grid_sizes=[8], dim=256, depth=6, heads=8, clip_width=128)
    states = torch.randn(4, 32, 128)

    def uvit_sample() -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        scheduler = AmusedScheduler(mask_token_id=512)
        scheduler.set_timesteps(12, temperature=(2.0, 0.0))
        codes = torch.full((4, 8, 8), 512)
        text = torch.cat([states, torch.zeros_like(states)])  # caption, then the null one
        pooled, micro = text.mean(1), torch.zeros(8, 5)
        with torch.no_grad():
            for t in scheduler.timesteps:
                logits = uvit(torch.cat([codes, codes]), text, pooled, micro).float()
                cond, uncond = logits.chunk(2)
                logits = uncond + 3.0 * (cond - uncond)
                codes = scheduler.step(logits, t, codes, generator=generator).prev_sample
        return codes

    def ours_sample() -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return ours.sample(None, states, num_steps=12, guidance_scale=3.0, generator=generator)

    batch = {
        "image_tokens": torch.randint(0, 512, (16, 8, 8)),
        "text_states": torch.randn(16, 32, 128),
    }
    opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (uvit, ours)}

    def uvit_step() -> None:
        codes, masked = ours.mask_codes(batch["image_tokens"].flatten(1))
        text = batch["text_states"]
        logits = uvit(codes.view(16, 8, 8), text, text.mean(1), torch.zeros(16, 5))
        logits = logits.flatten(2).transpose(1, 2)  # (B, 64, 512)
        loss = F.cross_entropy(logits[masked], batch["image_tokens"].flatten(1)[masked])
        loss.backward()
        opts[uvit].step()
        opts[uvit].zero_grad(set_to_none=True)

    def ours_step() -> None:
        ours.training_losses(batch)["loss"].backward()
        opts[ours].step()
        opts[ours].zero_grad(set_to_none=True)

    uvit.eval(), ours.eval()
    sampled = interleaved({"uvit": uvit_sample, "ours": ours_sample}, repeats)
    uvit.train(), ours.train()
    stepped = interleaved({"uvit": uvit_step, "ours": ours_step}, repeats)
    params = {
        k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in (("uvit", uvit), ("ours", ours))
    }
    return [
        f"Parameters: diffusers `UVit2DModel` {params['uvit']:.1f} M (its conv blocks, "
        f"cross-attention and GEGLU feed-forward included), t2i `MaskGITPrior` "
        f"{params['ours']:.1f} M.",
        "",
        "| what | diffusers UVit2DModel + AmusedScheduler s | t2i MaskGITPrior s | t2i speed-up |",
        "|---|---|---|---|",
        f"| 4 images, 12 steps, guidance 3 | {sampled['uvit']:.3f} | {sampled['ours']:.3f} | "
        f"{sampled['uvit'] / sampled['ours']:.2f}x |",
        f"| training step, batch 16 | {stepped['uvit']:.3f} | {stepped['ours']:.3f} | "
        f"{stepped['uvit'] / stepped['ours']:.2f}x |",
    ]


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
    parser.add_argument("--skip-random", action="store_true", help="no random-weight table")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the two routes' tables run (cuda: a GPU's latency; the race against "
        "diffusers' parts stays on the CPU)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=list(SIZES),
        default=list(SIZES),
        help="the random-weight table's model sizes (gpu: minutes at 32 x 32 on a CPU)",
    )
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    torch.set_flush_denormal(True)
    where = platform.processor() or platform.machine()
    if torch.device(args.device).type == "cuda":
        where = f"{torch.cuda.get_device_name(args.device)} (the race: {where})"
    lines = [
        "",
        f"## Masked against autoregressive decoding ({date.today()}, {where}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})",
        "",
        f"`{shlex.join(['python', 'scripts/bench_maskgit.py', *given])}`: "
        f"one prompt, 4 images, medians of {args.repeats} interleaved runs.",
        "",
    ]
    try:
        lines += pipeline_rows(args.model, args.repeats, args.device)
    except (ValueError, FileNotFoundError) as err:
        print(f"pipeline table skipped: {err}", file=sys.stderr)
    print("\n".join(lines), flush=True)
    lines += ["", *uvit_rows(args.repeats)]
    if not args.skip_random:
        lines += ["", *random_rows(args.repeats, args.sizes, args.device)]
    write_section(lines, args.out)
    return 0


def write_section(lines: list[str], out: str | None) -> None:
    """Print a markdown section, and append it to `out` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
