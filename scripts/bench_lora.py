"""LoRA against full fine-tuning of a pipeline's latent denoiser: seconds per training step
and what training holds beyond the frozen weights, measured side by side in one process.

    python scripts/bench_lora.py --model emoji --out docs/BENCHMARKS.md

Each variant (full, and LoRA at each rank) gets its own copy of the denoiser and an AdamW over
what trains; rounds alternate between the variants so that a noisy machine slows them alike.
A step is a forward and backward pass of `training_losses` on random latents and caption
states of the pipeline's shapes, and the optimizer's step. Training's own memory is counted
exactly: gradients and AdamW's two moments of every trainable parameter (4 bytes each in
float32), plus the adapters' weights; on a GPU the peak allocated memory is measured too.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i.cli import pipeline_path  # noqa: E402
from t2i.models import load_model  # noqa: E402
from t2i.models.lora import LoraSpec, add_lora  # noqa: E402


def batch(unet: torch.nn.Module, size: int, device: torch.device) -> dict:
    """Random latents and caption states of the denoiser's shapes."""
    c, s = unet.config.latent_channels, unet.config.latent_size
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(size, c, s, s, generator=g).to(device),
        "text_states": torch.randn(
            size, unet.config.context_length, unet.config.clip_width, generator=g
        ).to(device),
    }


def variant(
    base: torch.nn.Module, rank: int | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A copy of the denoiser, full (rank None) or with LoRA adapters, and its AdamW."""
    model = copy.deepcopy(base).train()
    if rank is not None:
        add_lora(model, LoraSpec(rank=rank))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=1e-4)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: dict) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.training_losses(data)["loss"].backward()
    optimizer.step()


def training_bytes(model: torch.nn.Module, rank: int | None) -> int:
    """Gradients and AdamW moments of what trains (float32), plus the adapters themselves."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * trainable * (3 + (rank is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="emoji", help="a pipeline with a latent denoiser")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    parser.add_argument("--out", help="markdown file to add the results to")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the trainer does
    base = load_model(pipeline_path(args.model) / "unet").float().to(device)
    data = batch(base, args.batch_size, device)
    names = ["full", *(f"LoRA rank {r}" for r in args.ranks)]
    variants = [variant(base, None), *(variant(base, r) for r in args.ranks)]
    for model, optimizer in variants:  # warm-up
        step(model, optimizer, data)
    seconds = {n: [] for n in names}
    peak = {}
    for _ in range(args.rounds):
        for name, (model, optimizer) in zip(names, variants, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, data)
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
            seconds[name].append((time.perf_counter() - start) / args.steps)
    full = sorted(seconds["full"])[len(seconds["full"]) // 2]
    rows = []
    for name, (model, _), rank in zip(names, variants, [None, *args.ranks], strict=True):
        median = sorted(seconds[name])[len(seconds[name]) // 2]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        memory = f"{peak[name]:.0f} MiB" if name in peak else "n/a (CPU)"
        rows.append(
            f"| {name} | {trainable:,} | {median * 1000:.0f} ms | {median / full:.2f} | "
            f"{training_bytes(model, rank) / 2**20:.2f} MiB | {memory} |"
        )
    text = "\n".join(
        [
            f"## LoRA against full fine-tuning: the {args.model} pipeline's denoiser",
            "",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{device.type}; torch {torch.__version__}. Command: `python scripts/bench_lora.py "
            f"--model {args.model}` (batch {args.batch_size}, median of {args.rounds} rounds of "
            f"{args.steps} steps, variants interleaved).",
            "",
            "| variant | trainable parameters | seconds per step | vs full | gradients + AdamW "
            "(+ adapters) | peak allocated |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
