"""Throughput benchmarks: `make bench` (or `python scripts/bench.py --out docs/BENCHMARKS.md`).

Measures, on this machine's device (CUDA with bf16 autocast when present, else the CPU):
- the shapes world: samples rendered per second, and the judge: images judged per second;
- each model family: training throughput (forward + backward + AdamW, images/s) at the
  shipped config's size, and its inference paths (images/s): sampling for the generative
  models, encode and decode for the tokenizers, sampling code grids for the PixelCNN priors;
- on the CPU, the speed-up of a training step from flushing denormal floats (as the trainer
  does) and from AdamW's fused kernel, for the latent route's autoencoder and denoiser.
For the DALL-E prior also training tokens/s and, where the device's peak is known (a table of
data-centre GPUs' dense bf16 peaks, or --peak-tflops), model FLOPs utilization: training
FLOPs per token = 6 N + 12 L d T (N the non-embedding parameters, L layers, width d,
sequence T; Chowdhery et al. 2022, appendix B) times tokens/s, over the peak.
Each figure is the median of `--repeats` timed runs after a warm-up. The table is written to
the output file under a heading that names the machine, so runs on other machines add up.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import send_to_device

from t2i.config import checker, load_config
from t2i.data.shapes import make_sample, to_tensor
from t2i.data.text import CaptionCollator
from t2i.evaluation import judge
from t2i.models import DALLEPrior, ImageTokenizer, LatentAutoencoder, MaskGITPrior, build_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = (
    "vae",
    "cvae",
    "gumbel",
    "dvae",
    "vqvae",
    "vqvae2",
    "pixelcnn",
    "pixelcnn_vqvae2",
    "clip",
    "prior",
    "prior_embed",
    "diffusion_prior",
    "decoder",
    "diffusion_decoder",
    "autoencoder_kl",
    "ldm",
    "maskgit",
)
# variants of a shipped config: name -> (config, model overrides)
VARIANTS = {"prior_embed": ("prior", {"text_encoder": "embed"})}  # own BPE embedding


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_data(repeats: int) -> list[tuple[str, str, float]]:
    """Shapes rendering and judging throughput at 32 and 64 pixels."""
    rows = []
    for size in (32, 64):
        samples = [make_sample(i, seed=0, size=size) for i in range(200)]
        render = timed(
            lambda s=size: [make_sample(i, 0, s) for i in range(200)], repeats, torch.device("cpu")
        )
        judged = timed(
            lambda ss=samples: [judge(x["image"], x["spec"]) for x in ss],
            repeats,
            torch.device("cpu"),
        )
        rows.append((f"shapes render, {size} px", "samples/s", 200 / render))
        rows.append((f"judge, {size} px", "images/s", 200 / judged))
    return rows


def _write_shards(folder: Path, out: Path, shards: int = 4) -> None:
    """The images and captions of an exported folder as WebDataset .tar shards."""
    import io
    import json
    import tarfile

    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    for k in range(shards):
        with tarfile.open(out / f"shard-{k}.tar", "w") as tf:
            for row in rows[k::shards]:
                key = Path(row["file_name"]).stem
                for name, data in (
                    (f"{key}.png", (folder / row["file_name"]).read_bytes()),
                    (f"{key}.txt", row["caption"].encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))


def bench_loading(n: int = 512) -> list[tuple[str, str, float]]:
    """Data-loading throughput, 64 px images, batch 64: an image folder (metadata.jsonl) and
    WebDataset shards, with 0, 1 and 2 DataLoader workers; one full pass each."""
    import tempfile

    from torch.utils.data import DataLoader

    from t2i.data.captioned import CaptionedDataset
    from t2i.data.shapes import export
    from t2i.data.webdataset import WebDatasetShards

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(Path(tmp) / "folder", n=n, seed=0, size=64)
        _write_shards(folder, Path(tmp) / "shards")
        sets = {
            "image folder": CaptionedDataset(folder, image_size=64),
            "WebDataset shards": WebDatasetShards(Path(tmp) / "shards", image_size=64),
        }
        for name, data in sets.items():
            for workers in (0, 1, 2):
                loader = DataLoader(
                    data, batch_size=64, num_workers=workers, collate_fn=CaptionCollator(32)
                )
                seconds = timed(lambda ld=loader: sum(1 for _ in ld), 1, torch.device("cpu"))
                rows.append((f"data loading, {name}, {workers} workers", "images/s", n / seconds))
    return rows


def _batch(config, batch_size: int, device: torch.device) -> dict:
    """A batch of shapes samples for a config: pixels, captions and their tokens."""
    items = [make_sample(i, 0, config.data.image_size) for i in range(batch_size)]
    batch = CaptionCollator(config.data.context_length)(
        [{"pixel_values": to_tensor(s["image"]), "caption": s["caption"]} for s in items]
    )
    return send_to_device(batch, device)


def model_and_batch(name: str, batch_size: int, device: torch.device) -> tuple:
    """One shipped config's model (seeded) and a batch of what it reads: shapes samples, with
    random stand-ins for the frozen readers' outputs (CLIP, latents, codes)."""
    base, overrides = VARIANTS.get(name, (name, {}))
    config = load_config(ROOT / "configs" / "shapes" / f"{base}.yaml")
    config.model.update(overrides)
    torch.manual_seed(0)
    model = build_model(config.model, checker(name)).to(device)
    batch = _batch(config, batch_size, device)
    batch.update(stand_in_clip_outputs(model, batch_size, device))
    if "latents" in model.reads:  # random latents stand in for an autoencoder's
        c = model.config
        shape = (batch_size, c.latent_channels, c.latent_size, c.latent_size)
        batch["latents"] = torch.randn(shape, device=device)
    if "image_tokens" in model.reads:  # random codes stand in for a tokenizer's
        grids = model.config.get("grid_sizes") or [model.config.grid_size]
        codes = [torch.randint(0, model.config.num_tokens, (batch_size, g, g)) for g in grids]
        batch["image_tokens"] = send_to_device(
            codes[0] if len(codes) == 1 else tuple(codes), device
        )
    return model, batch, config


def bench_model(
    name: str,
    batch_size: int,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
    peak: float | None = None,
) -> list[tuple[str, str, float]]:
    """Throughput of one shipped config's model: a training step (forward, backward, AdamW)
    and the inference paths of its family (sampling; encode and decode for tokenizers)."""
    model, batch, config = model_and_batch(name, batch_size, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            loss = model.training_losses(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def inference(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast:
                fn()

        return run

    kind = config.model["type"]
    if "text_encoder" in config.model:
        kind += f", {reads(model)}"
    label = f"{kind} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M)"

    def train_row() -> list[tuple[str, str, float]]:
        model.train()
        seconds = timed(step, repeats, device)
        return [(f"{label} train, batch {batch_size}", "images/s", batch_size / seconds)]

    x = batch["pixel_values"]
    paths: dict[str, Callable[[], object]] = {}
    if isinstance(model, (ImageTokenizer, LatentAutoencoder)):
        tokens = model.eval().encode(x)  # codes, or an autoencoder's latents
        paths = {"encode": lambda: model.encode(x), "decode": lambda: model.decode(tokens)}
    elif isinstance(model, DALLEPrior):
        rows = train_row()
        rows += prior_token_rows(model, rows[0][2], peak, label)
        return [*rows, *bench_prior_sampling(model, batch, repeats, device, autocast)]
    elif "text_embeds" in model.reads:  # draws image embeddings (the diffusion prior)
        embeds, states = batch["text_embeds"], batch["text_states"]
        paths = {"sample embeddings, 25 DDIM steps": lambda: model.sample(embeds, states)}
    elif "latents" in model.reads:  # the latent denoiser, guided (two branches a step)
        states = batch["text_states"]
        for steps in (10, 20):
            paths[f"sample latents, {steps} DPM-Solver++ steps, guidance 5"] = lambda steps=steps: (
                model.sample(states, states, 5.0, steps)
            )
    elif isinstance(model, MaskGITPrior):  # parallel steps, guided (two branches a step)
        states = batch["text_states"]
        paths = {
            "sample codes, 16 steps, guidance 2": lambda: model.sample(
                None, states, num_steps=16, guidance_scale=2.0
            )
        }
    elif "image_tokens" in model.reads:  # a PixelCNN over codes
        n, ids = batch_size, batch["input_ids"]
        paths = {"sample codes": lambda: model.sample(n, input_ids=ids)}
    elif hasattr(model, "log_images"):
        paths = {"sample": lambda: model.log_images(batch)["samples"]}
    rows = train_row()
    model.eval()
    for what, fn in paths.items():
        seconds = timed(inference(fn), repeats, device)
        rows.append((f"{label} {what}, batch {batch_size}", "images/s", batch_size / seconds))
    return rows


def stand_in_clip_outputs(model: torch.nn.Module, n: int, device: torch.device) -> dict:
    """Random CLIP outputs for the models that read a frozen CLIP: token states for the
    DALL-E prior and the diffusion prior, unit text and image embeddings for unCLIP's
    stages (a CLIP model's own would cost its forward pass, which is not what is timed)."""
    c, out = model.config, {}
    if "text_states" in model.reads:
        out["text_states"] = torch.randn(n, c.context_length, c.clip_width)
    if "image_embeds" in model.reads:
        out["image_embeds"] = F.normalize(torch.randn(n, c.embed_dim), dim=-1)
    if "text_embeds" in model.reads:
        out["text_embeds"] = F.normalize(torch.randn(n, c.embed_dim), dim=-1)
    return send_to_device(out, device)


def reads(prior: DALLEPrior) -> str:
    """What a DALL-E prior reads, for the table's labels."""
    if "image_embeds" in prior.reads:
        return "unCLIP decoder"
    return "clip text" if "text_states" in prior.reads else "embed text"


def bench_prior_sampling(
    prior: DALLEPrior, batch: dict, repeats: int, device: torch.device, autocast
) -> list[tuple[str, str, float]]:
    """The DALL-E prior's sampling, guidance 3, with the KV cache and recomputing the whole
    sequence at every step; images/s of each and the speed-up of the cache."""
    prior.eval()
    n = len(batch["input_ids"])
    c = prior.config
    prefix = "image-embedding" if c.text_encoder == "clip_image" else "text"
    label = (
        f"dalle_prior ({reads(prior)}) dim {c.dim}, depth {c.depth}, "
        f"{c.context_length} {prefix} + {prior.image_len} image tokens, batch {n}"
    )
    seconds = {}
    for cache in (True, False):

        def run(cache: bool = cache) -> None:
            with torch.no_grad(), autocast:
                prior.sample(
                    batch["input_ids"],
                    batch.get("text_states"),
                    guidance_scale=3.0,
                    use_cache=cache,
                    image_embeds=batch.get("image_embeds"),
                )

        seconds[cache] = timed(run, repeats, device)
    return [
        (f"{label}: sample, KV cache, guidance 3", "images/s", n / seconds[True]),
        (f"{label}: sample, no cache, guidance 3", "images/s", n / seconds[False]),
        (f"{label}: KV cache speed-up", "x", seconds[False] / seconds[True]),
    ]


# dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """The device's dense peak in TFLOP/s: `given`, else the table's entry for a CUDA GPU."""
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def prior_flops_per_token(prior: DALLEPrior) -> tuple[float, int]:
    """Training FLOPs per token of the prior and its sequence length T: 6 N T + 12 L d T^2 per
    sample for the transformer's N weights and attention (Chowdhery et al. 2022, appendix
    B; N counts weight matrices, not biases or norms), plus 6 x weights x positions for the
    heads and 4 x for the text projection (its input needs no gradient), each over its own
    part of the sequence (the text head as if no caption token were padding)."""
    c = prior.config
    text, image = c.context_length, prior.image_len
    seq = text + image - 1  # the last image token is a target, never an input
    matrices = sum(p.numel() for p in prior.transformer.parameters() if p.ndim == 2)
    flops = 6.0 * matrices * seq
    flops += 12.0 * c.depth * c.dim * seq * seq
    flops += 6.0 * prior.image_head.weight.numel() * image
    if c.text_encoder == "embed":  # the text head, tied to the embedding
        flops += 6.0 * prior.text_embed.weight.numel() * (text - 1)
    elif c.text_encoder == "clip_image":  # one embedding -> the whole prefix, with gradient
        flops += 6.0 * prior.embed_proj.weight.numel()
    else:
        flops += 4.0 * prior.text_proj.weight.numel() * text  # its input needs no gradient
    return flops / seq, seq


def prior_token_rows(
    prior: DALLEPrior, images_per_s: float, peak: float | None, label: str
) -> list[tuple[str, str, float]]:
    """Training tokens/s of the prior and, with a peak, its model FLOPs utilization."""
    flops, seq = prior_flops_per_token(prior)
    tokens = images_per_s * seq
    rows = [(f"{label} train ({seq} tokens/sample)", "tokens/s", tokens)]
    if peak:
        rows.append(
            (
                f"{label} train MFU (peak {peak:g} TFLOP/s)",
                "%",
                100 * tokens * flops / (peak * 1e12),
            )
        )
    return rows


def machine() -> str:
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def command(argv: list[str] | None) -> str:
    """The command line that made a table: `make bench`'s own, or the script's arguments."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--out", "docs/BENCHMARKS.md"]:
        return "make bench"
    return " ".join(["python scripts/bench.py", *args])


def _figure(value: float) -> str:
    """Three significant figures, thousands separated."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def bench_cpu_settings(names: list[str], batch_size: int, repeats: int) -> list:
    """On the CPU: a training step with denormal floats flushed (what the trainer does on the
    CPU) and with AdamW's fused kernel, each over the plain step (denormals kept, AdamW's
    per-tensor loop), timed side by side in alternating rounds so the machine's load falls on
    all alike. A ratio above 1 is a speed-up."""
    device = torch.device("cpu")
    rows = []
    for name in names:
        model, batch, _ = model_and_batch(name, batch_size, device)
        model.train()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        settings = {  # what -> (flush denormals, fused AdamW)
            "plain": (False, False),
            "denormals flushed": (True, False),
            "denormals flushed, fused AdamW": (True, True),
        }
        optimizers = {
            what: torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
            for what, (_, fused) in settings.items()
        }
        times: dict[str, list[float]] = {what: [] for what in settings}
        for round_ in range(repeats + 1):  # the first round warms up
            for what, (flush, _) in settings.items():
                model.load_state_dict(state)  # every setting steps from the same weights
                torch.set_flush_denormal(flush)
                optimizer = optimizers[what]
                start = time.perf_counter()
                loss = model.training_losses(batch)["loss"]
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if round_:
                    times[what].append(time.perf_counter() - start)
        torch.set_flush_denormal(False)
        plain = statistics.median(times["plain"])
        for what in list(settings)[1:]:
            ratio = plain / statistics.median(times[what])
            rows.append((f"{name} train step, batch {batch_size}: {what}", "x plain", ratio))
    return rows


# the shipped configs whose training step is timed under torch.compile and channels-last
COMPILE_AND_LAYOUT = (
    "autoencoder_kl",
    "ldm",
    "dvae",
    "vqvae",
    "diffusion_decoder",
    "clip",
    "prior",
    "maskgit",
)


def _channels_last(batch: dict) -> dict:
    """The batch with its image-shaped float tensors (4-D) in channels-last layout."""
    return {
        k: v.contiguous(memory_format=torch.channels_last)
        if torch.is_tensor(v) and v.dim() == 4 and v.is_floating_point()
        else v
        for k, v in batch.items()
    }


def bench_compile_and_layout(names: list[str], batch_size: int, repeats: int) -> list:
    """On the CPU: a training step with `torch.compile` (inductor) and, for models with
    convolutions, with the model and its image inputs in channels-last layout, each against
    the plain step (denormals flushed, as the trainer runs) of a copy of the same model, timed
    in alternating rounds. The compiled step's first call, its compilation, is a row apart.
    A ratio above 1 is a speed-up."""
    device = torch.device("cpu")
    torch.set_flush_denormal(True)
    rows = []
    for name in names:
        model, batch, _ = model_and_batch(name, batch_size, device)
        model.train()
        variants = {"plain": (model, model.training_losses, batch)}
        compiled = copy.deepcopy(model)
        variants["torch.compile"] = (compiled, torch.compile(compiled.training_losses), batch)
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            layout = copy.deepcopy(model).to(memory_format=torch.channels_last)
            variants["channels-last"] = (layout, layout.training_losses, _channels_last(batch))
        optimizers = {
            what: torch.optim.AdamW(m.parameters(), lr=1e-4) for what, (m, _, _) in variants.items()
        }
        times: dict[str, list[float]] = {what: [] for what in variants}
        for round_ in range(repeats + 1):  # the first round warms up (and compiles)
            for what, (_, losses, b) in variants.items():
                start = time.perf_counter()
                losses(b)["loss"].backward()
                optimizers[what].step()
                optimizers[what].zero_grad(set_to_none=True)
                seconds = time.perf_counter() - start
                if round_:
                    times[what].append(seconds)
                elif what == "torch.compile":
                    rows.append(
                        (
                            f"{name} train step, batch {batch_size}: torch.compile's first step",
                            "s",
                            seconds,
                        )
                    )
        plain = statistics.median(times["plain"])
        for what in list(variants)[1:]:
            ratio = plain / statistics.median(times[what])
            rows.append((f"{name} train step, batch {batch_size}: {what}", "x plain", ratio))
    torch.set_flush_denormal(False)
    return rows


def add_section(text: str, out: str | None) -> None:
    """Print a markdown section and, when `out` is given, add it to that file after a blank
    line (a new file starts with the "# Benchmarks" title)."""
    print(text)
    if out:
        path = Path(out)
        head = path.read_text() if path.is_file() else "# Benchmarks\n"
        path.write_text(head.rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write (or print) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="markdown file to add the results to")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_CONFIGS,
        default=list(MODEL_CONFIGS),
        help="the shipped configs to time (default: all)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak TFLOP/s, for MFU (GPUs: a table)"
    )
    parser.add_argument("--prior-batch-size", type=int, default=16, help="prompts per sample")
    parser.add_argument(
        "--no-loading", dest="loading", action="store_false", help="skip the data-loading rows"
    )
    parser.add_argument(
        "--compile-and-layout",
        action="store_true",
        help="CPU: also time training steps under torch.compile and channels-last (minutes: "
        "each config compiles)",
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = bench_data(args.repeats)
    if args.loading:
        rows += bench_loading()
    for name in args.models:
        batch_size = args.prior_batch_size if name.startswith("prior") else args.batch_size
        peak = peak_tflops(device, args.peak_tflops)
        rows += bench_model(name, batch_size, args.repeats, device, dtype, peak)
    if device.type == "cpu":
        names = [n for n in ("autoencoder_kl", "ldm") if n in args.models]
        rows += bench_cpu_settings(names, args.batch_size, args.repeats)
        if args.compile_and_layout:
            names = [n for n in COMPILE_AND_LAYOUT if n in args.models]
            rows += bench_compile_and_layout(names, args.batch_size, args.repeats)
    precision = "bf16 autocast" if dtype == torch.bfloat16 else "fp32"
    lines = [
        f"### {date.today()}: {device.type}, {precision}",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `{command(argv)}`; median of {args.repeats} runs after a warm-up.",
        "",
        "| what | unit | throughput |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {what} | {unit} | {_figure(value)} |" for what, unit, value in rows]
    add_section("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
