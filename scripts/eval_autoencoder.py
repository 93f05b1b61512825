"""What an autoencoder or image tokenizer keeps of real images, as the evaluation CLIP reads
them: the ceiling of every route that draws through it, measured on one model alone.

    python scripts/eval_autoencoder.py runs/emoji/vq_plain/model --data data/emoji \
        --eval-clip runs/emoji/eval_clip32 --n 256 --out vq_plain.json

MODEL is a saved KL autoencoder or VQ tokenizer (a model folder, or a run with model/ in it).
The data set's split is its heldout.json (the parts it names), else `num_val` 512 seeded as
the trainer draws it; `--n` images are drawn (seeded) from training and from each held-out
part. The JSON (printed, and written to --out) has, per part, the real images' R@1 and style
right (`real`), the same on their reconstructions decode(encode(x)) (`reconstructed`), and the
model's PSNR on the held-out images (with codebook usage and perplexity for a tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from t2i.data.captioned import CaptionedDataset
from t2i.evaluation.captioned import (
    Judge,
    autoencoder_psnr,
    choose,
    fit_style_classifier,
    held_out_together,
    heldout_split,
    read_samples,
    reconstruction_scores,
    tokenizer_report,
)
from t2i.models import CLIPModel, load_model


def measure(model, clip, data: CaptionedDataset, n: int, seed: int, batch_size: int) -> dict:
    """The report (see the module docstring) of `model` on `data`, judged by `clip`."""
    split = heldout_split(data, data.path)  # the data set's own heldout.json, if it has one
    reals = {part: read_samples(data, idx) for part, idx in choose(split, n, seed).items()}
    styles = fit_style_classifier(data, split.train, clip, batch_size, seed)
    judge = Judge(clip, data, batch_size, seed, styles[0] if styles else None)
    real = {}
    for part, samples in reals.items():
        real |= judge.part_scores(samples.pixels, samples, part)
    parts = [reals[p] for p in reals if p != "train"]
    held = held_out_together(parts, [s.pixels for s in parts]).pixels
    quantised = hasattr(model, "num_tokens")  # a tokenizer: codes, a codebook
    report = (tokenizer_report if quantised else autoencoder_psnr)(model, held, batch_size)
    return {
        "n": {part: len(s.captions) for part, s in reals.items()},
        "split": split.source,
        "real": real,
        "reconstructed": reconstruction_scores(model, reals, judge, batch_size),
        **report,
    }


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="a saved autoencoder or tokenizer (or its run)")
    p.add_argument("--data", required=True, help="a captioned data set")
    p.add_argument("--eval-clip", required=True, help="the evaluation CLIP (a model folder)")
    p.add_argument("--n", type=int, default=256, help="images per part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", help="also write the JSON here (never over a file)")
    args = p.parse_args(argv)
    try:
        if args.out and Path(args.out).exists():
            raise ValueError(f"--out {args.out}: exists; choose another file")
        if args.n < 1:
            raise ValueError(f"--n {args.n}: must be >= 1")
        path = Path(args.model)
        model = load_model(path / "model" if (path / "model").is_dir() else path).eval()
        if not hasattr(model, "encode") or not hasattr(model, "decode"):
            raise ValueError(f"{args.model}: a {type(model).__name__}, not an autoencoder")
        clip = load_model(args.eval_clip, kind=CLIPModel).eval()
        data = CaptionedDataset(args.data, model.config.image_size)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with torch.no_grad():
        report = measure(model, clip, data, args.n, args.seed, args.batch_size)
    report = {"model": args.model, "data": args.data, "eval_clip": args.eval_clip, **report}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
