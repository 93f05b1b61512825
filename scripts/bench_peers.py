"""t2i's DALL-E prior against a peer implementation, DALLE-pytorch 1.6.6, side by side.

Run `make bench-peers`: it installs the peer (and its small pure-Python dependencies) into
.cache/peers, outside the project's environment, then runs
`python scripts/bench_peers.py --peers .cache/peers --out docs/BENCHMARKS.md`.

Measures, on the CPU at matched sizes (width 256, 6 blocks, 8 heads of 32, 32 caption tokens
+ an 8 x 8 grid of codes from a 512-code book, batch 16):
- sampling a batch of images with classifier-free guidance 3 and a key/value cache:
  DALLE-pytorch's `DALLE.generate_images` against t2i's `DALLEPrior.sample`;
- a training step (forward, backward, AdamW step): DALLE-pytorch's `DALLE(...,
  return_loss=True)` against t2i's `DALLEPrior.training_losses`;
for t2i in both of its caption readings, "embed" (its own embedding of the BPE ids) and
"clip" (given frozen CLIP token states, random here). The calls are interleaved in one
process (t2i embed, t2i clip, peer, t2i embed, ...) after one warm-up each; each figure is
the median of `--repeats` rounds. Weights, captions and codes are random: speed only.
"""

from __future__ import annotations

import argparse
import platform
import sys
import types
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from t2i.models import DALLEPrior
from t2i.nn.text import VOCAB_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside this one
from bench import add_section  # noqa: E402
from bench_maskgit import interleaved  # noqa: E402

PEER = "DALLE-pytorch 1.6.6"
PEER_VERSION = "1.6.6"
DIM, DEPTH, HEADS, DIM_HEAD = 256, 6, 8, 32  # t2i: heads of dim // heads = 32
TEXT_LEN, GRID, CODEBOOK = 32, 8, 512
IMAGE_SIZE, VAE_LAYERS = 32, 2  # the peer's DiscreteVAE: 32 px halved twice -> 8 x 8 codes
CLIP_WIDTH = 128  # DALLEPrior's default clip_width
GUIDANCE, FILTER_THRES = 3.0, 0.9
START, END = VOCAB_SIZE - 2, VOCAB_SIZE - 1  # open_clip's <start_of_text>, <end_of_text>
MODES = ("embed", "clip")


def stub_unused_imports() -> None:
    """Put stand-ins into sys.modules for what `import dalle_pytorch` pulls in but the DALLE
    and DiscreteVAE classes never touch, so the peer imports without them:
    - `pkg_resources` (setuptools; absent from .venv, deprecated): `dalle_pytorch/__init__`
      imports `get_distribution` and never calls it; `vae.py` calls it only in
      `OpenAIDiscreteVAE` (OpenAI's pretrained VAE, not used here);
    - `omegaconf` and `taming.models.vqgan` (taming-transformers, which pulls in pytorch
      lightning; both absent): `vae.py` imports `OmegaConf`, `VQModel` and `GumbelVQ` for
      `VQGanVAE` only, not used here.
    (`youtokentome` is imported only by `dalle_pytorch.tokenizer`, which DALLE does not import;
    deepspeed and horovod are imported lazily, only when a distributed backend is chosen.)
    """

    def stub(name: str, **attrs: Any) -> None:
        module = types.ModuleType(name, f"stub for {PEER}'s unused import (bench_peers.py)")
        module.__dict__.update(attrs)
        sys.modules[name] = module

    def unused(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a stub module of scripts/bench_peers.py was called")

    stub("pkg_resources", get_distribution=unused)
    stub("omegaconf", OmegaConf=type("OmegaConf", (), {"load": staticmethod(unused)}))
    stub("taming")
    stub("taming.models")
    stub("taming.models.vqgan", VQModel=type("VQModel", (), {}), GumbelVQ=type("GumbelVQ", (), {}))


def import_peer(peers: Path) -> types.ModuleType:
    """`dalle_pytorch` from the folder `pip install --target` filled (`make bench-peers`)."""
    if not (peers / "dalle_pytorch").is_dir():
        raise SystemExit(
            f"no dalle_pytorch under {peers}: run `make bench-peers`, or pip install --no-deps "
            f"--target {peers} dalle-pytorch=={PEER_VERSION} axial-positional-embedding "
            "rotary-embedding-torch g-mlp-pytorch"
        )
    stub_unused_imports()
    sys.path.insert(0, str(peers))
    import dalle_pytorch

    if dalle_pytorch.__version__ != PEER_VERSION:
        raise SystemExit(f"{peers} holds dalle_pytorch {dalle_pytorch.__version__}, not 1.6.6")
    return dalle_pytorch


def t2i_prior(mode: str) -> DALLEPrior:
    """t2i's DALL-E prior at the matched size, reading captions as `mode` says."""
    return DALLEPrior(
        num_tokens=CODEBOOK,
        grid_sizes=[GRID],
        context_length=TEXT_LEN,
        text_encoder=mode,
        dim=DIM,
        depth=DEPTH,
        heads=HEADS,
    )


def peer_dalle(dalle_pytorch: types.ModuleType) -> nn.Module:
    """The peer's DALLE at the matched size, over a DiscreteVAE with an 8 x 8 code grid;
    everything else at 1.6.6's defaults (full causal attention, rotary positions, token
    shift, GEGLU feed-forward, separate input and output embeddings)."""
    vae = dalle_pytorch.DiscreteVAE(
        image_size=IMAGE_SIZE, num_tokens=CODEBOOK, num_layers=VAE_LAYERS
    )
    return dalle_pytorch.DALLE(
        dim=DIM,
        vae=vae,
        num_text_tokens=VOCAB_SIZE,
        text_seq_len=TEXT_LEN,
        depth=DEPTH,
        heads=HEADS,
        dim_head=DIM_HEAD,
    )


def random_batch(batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Captions of 6 to 20 BPE tokens between <start> and <end>, zero-padded to TEXT_LEN;
    random CLIP token states; random 8 x 8 code grids."""
    ids = torch.zeros(batch_size, TEXT_LEN, dtype=torch.long)
    lengths = torch.randint(6, 21, (batch_size,), generator=generator)
    for row, n in enumerate(lengths.tolist()):
        words = torch.randint(1, START, (n,), generator=generator)
        ids[row, : n + 2] = torch.cat([torch.tensor([START]), words, torch.tensor([END])])
    return {
        "input_ids": ids,
        "text_states": torch.randn(batch_size, TEXT_LEN, CLIP_WIDTH, generator=generator),
        "image_tokens": torch.randint(0, CODEBOOK, (batch_size, GRID, GRID), generator=generator),
    }


def training_step(model: nn.Module, loss: Callable[[], Tensor]) -> Callable[[], None]:
    """One AdamW step of `model` on `loss()`, in training mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command(argv: list[str] | None) -> str:
    """The command line that made the table: `make bench-peers`'s own, or the script's."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--peers", ".cache/peers", "--out", "docs/BENCHMARKS.md"]:
        return "make bench-peers"
    return " ".join(["python scripts/bench_peers.py", *args])


def millions(model: nn.Module, trainable: bool = False) -> str:
    """Parameter count in millions (only the trained ones if `trainable`)."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
    return f"{n / 1e6:.1f} M"


def main(argv: list[str] | None = None) -> int:
    """Time both sides and print (and append to --out) the markdown section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=Path, default=Path(".cache/peers"))
    parser.add_argument("--out", help="markdown file to append the section to")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=16, help="captions per sample and step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dalle_pytorch = import_peer(args.peers)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    priors = {mode: t2i_prior(mode) for mode in MODES}
    dalle = peer_dalle(dalle_pytorch)
    batch = random_batch(args.batch, torch.Generator().manual_seed(args.seed))
    text, codes = batch["input_ids"], batch["image_tokens"].flatten(1)  # the peer's (B, 64)
    generator = torch.Generator().manual_seed(args.seed + 1)

    def t2i_sample(mode: str) -> Callable[[], object]:
        prior = priors[mode]
        ids = batch["input_ids"] if mode == "embed" else None
        states = batch["text_states"] if mode == "clip" else None

        def run() -> Tensor:
            prior.eval()
            return prior.sample(ids, states, guidance_scale=GUIDANCE, generator=generator)

        return run

    def peer_sample() -> Tensor:
        # a copy: with cond_scale != 1 the peer zeroes the caption it is given in place
        return dalle.generate_images(
            text.clone(), use_cache=True, cond_scale=GUIDANCE, filter_thres=FILTER_THRES
        )

    @torch.no_grad()
    def peer_decode() -> Tensor:
        return dalle.vae.decode(codes)

    sampling = interleaved(
        {
            "embed": t2i_sample("embed"),
            "clip": t2i_sample("clip"),
            "peer": peer_sample,
            "peer_decode": peer_decode,
        },
        args.repeats,
    )
    training = interleaved(
        {
            **{
                mode: training_step(
                    priors[mode], lambda m=mode: priors[m].training_losses(batch)["loss"]
                )
                for mode in MODES
            },
            "peer": training_step(dalle, lambda: dalle(text, codes, return_loss=True)),
        },
        args.repeats,
    )

    b = args.batch
    rows = [
        (f"sampling {b} images (guidance 3, KV cache)", sampling),
        (f"training step, batch {b}", training),
    ]
    lines = [
        f"## Peers side by side ({date.today()}, {cpu_name()}, {args.threads} threads, "
        f"torch {torch.__version__})",
        "",
        f"Command: `{command(argv)}`; median of {args.repeats} interleaved rounds after a "
        "warm-up; fp32, random weights, captions and codes.",
        "",
        f"| what | {PEER} s | t2i embed s | t2i clip s | speed-up embed | speed-up clip |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for what, t in rows:
        lines.append(
            f"| {what} | {t['peer']:.3g} | {t['embed']:.3g} | {t['clip']:.3g} "
            f"| {t['peer'] / t['embed']:.2f}x | {t['peer'] / t['clip']:.2f}x |"
        )
    steps, total = GRID * GRID, dalle.total_tokens
    lines += [
        "",
        f"- {PEER} sampling: `dalle.generate_images(text, use_cache=True, cond_scale=3, "
        f"filter_thres=0.9)` on a copy of the {b} captions: {steps} steps, each two forward "
        f"passes of {b} rows (the caption, then the null caption, each with its own KV cache) "
        f"to logits over all {total:,} text and image tokens, the top 10% kept (which keeps "
        "every image code), a Gumbel draw; then its DiscreteVAE decodes the 8 x 8 codes to "
        f"32 x 32 pixels (that decode alone: {sampling['peer_decode']:.3g} s).",
        f"- t2i sampling: `prior.sample(..., guidance_scale=3.0, generator=g)`: {steps} steps, "
        f"each one forward pass of {2 * b} rows (caption and null prefix batched) with a KV "
        f"cache to logits over the {CODEBOOK} codes, a multinomial draw; it returns the codes, "
        "decoding is a separate tokenizer's work and not timed.",
        f"- {PEER} training step: zero_grad, `dalle(text, codes, return_loss=True)` (the 8 x 8 "
        f"codes passed directly, no VAE encode; cross-entropy of every text and image "
        f"position over its joint {total:,}-token head), backward, AdamW step.",
        "- t2i training step: zero_grad, `prior.training_losses(batch)['loss']` (embed: image "
        "cross-entropy plus text cross-entropy over the real caption tokens through the tied "
        "embedding; clip: image cross-entropy only, from given CLIP token states; 10% of "
        "captions swapped for the null prefix), backward, AdamW step.",
        f"- Parameters: {PEER} {millions(dalle, trainable=True)} trained (its VAE frozen), "
        f"t2i embed {millions(priors['embed'])}, t2i clip {millions(priors['clip'])}; the "
        "peer's feed-forward is GEGLU (1.5x the weights of t2i's GELU MLP), with rotary "
        "positions and token shift.",
    ]
    add_section("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
