"""A picture of what a captioned pipeline draws: for each part of its split (training captions,
then each held-out part its heldout.json names), a row of real images over a row of the images
drawn for their captions, at the pipeline's recorded sampling settings, never reranked.

    python scripts/emoji_grid.py --model emoji --data data/emoji-ship --out docs/images/emoji.png

OUT gets the grid (each image enlarged --scale times, nearest-neighbour; a part's name at the
left of its rows) and OUT with .md for .png: the captions, numbered by column, part by part.
The captions are drawn at random (--seed) from each part, --k per part; image i is drawn from
its own seed (--seed + i), as `python -m t2i.generate --seed` draws it. An existing OUT is
refused unless --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from t2i.cli import check_model, pipeline_path
from t2i.data.captioned import CaptionedDataset
from t2i.evaluation.captioned import heldout_split, pick, read_samples

LABEL = 110  # pixels left of the rows for the part's name
SHORT = {
    "train": "training",
    "cells": "held-out cell",
    "concepts": "held-out concept",
    "skin_tones": "held-out tone",
    "heldout": "held-out",
}
NAMES = {
    "train": "training captions",
    "cells": "held-out cells (concept seen, not in this style)",
    "concepts": "held-out concepts (never seen)",
    "skin_tones": "held-out skin tones",
    "heldout": "held-out captions",
}


def to_image(pixels: torch.Tensor, scale: int) -> Image.Image:
    """(3, H, W) on [-1, 1] as an RGB image enlarged `scale` times."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array, "RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def draw(pipe, captions: list[str], seed: int, batch: int = 50) -> list[torch.Tensor]:
    """One image per caption on [-1, 1], caption i's from its own generator seeded seed + i
    (what `python -m t2i.generate CAPTION --seed SEED+i -n 1` draws), `batch` per call."""
    out = []
    for start in range(0, len(captions), batch):
        chunk = captions[start : start + batch]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        result = pipe(chunk, num_images_per_prompt=1, generator=gens, output_type="pt")
        out += list(result.images.float().cpu() * 2 - 1)
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="a saved pipeline or a shipped one's name")
    p.add_argument("--data", required=True, help="the captioned data set it was trained on")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--k", type=int, default=8, help="captions per part")
    p.add_argument("--scale", type=int, default=2, help="enlargement of each image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--route", help="the route (default: the pipeline's first)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix != ".png":
            raise ValueError(f"--out {out}: give a .png path")
        if out.exists() and not args.force:
            raise ValueError(f"--out {out}: exists; pass --force to replace it")
        if args.k < 1 or args.scale < 1:
            raise ValueError(f"--k {args.k} / --scale {args.scale}: must be >= 1")
        check_model(args.model)
        if not (Path(args.data) / "metadata.jsonl").is_file():
            raise ValueError(f"--data {args.data}: no metadata.jsonl there")
        from t2i.pipelines import TextToImagePipeline

        path = pipeline_path(args.model)
        bundle = TextToImagePipeline.from_pretrained(path, torch_dtype=torch.float32)
        route = args.route or bundle.routes[0]
        if route not in bundle.routes:
            raise ValueError(f"--route {route}: {args.model} has only {', '.join(bundle.routes)}")
        data = CaptionedDataset(args.data, bundle.image_size)
        split = heldout_split(data, path)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pipe = bundle.route(route)
    pipe.set_progress_bar_config(disable=True)
    parts = {"train": split.train, **(split.parts or {"heldout": split.heldout})}
    size = bundle.image_size * args.scale
    grid = Image.new("RGB", (LABEL + args.k * (size + 2), len(parts) * 2 * (size + 2)), "white")
    font = ImageFont.load_default(size=12)  # FreeType: the bitmap default drops spaces
    pen = ImageDraw.Draw(grid)
    lines = [f"# {args.model}: real images (upper rows) and what it draws (lower rows)", ""]
    for row, (part, indices) in enumerate(parts.items()):
        samples = read_samples(data, pick(indices, args.k, args.seed))
        drawn = draw(pipe, samples.captions, args.seed)
        top = row * 2 * (size + 2)
        pen.text((4, top + size // 2), SHORT.get(part, part[:16]), fill="black", font=font)
        for col, (real, made) in enumerate(zip(samples.pixels, drawn, strict=True)):
            x = LABEL + col * (size + 2)
            grid.paste(to_image(real, args.scale), (x, top))
            grid.paste(to_image(made, args.scale), (x, top + size + 2))
        lines += [f"## {NAMES.get(part, part)}", ""]
        lines += [f"{i + 1}. {c}" for i, c in enumerate(samples.captions)] + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"{out}: {len(parts)} parts, {args.k} captions each ({out.with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
