"""Generate images from text: `python -m t2i.generate "a red circle above a blue square"`.

Writes PNG files (the prompt and the settings in their metadata) and prints their paths.
With no --model it uses the default pipeline shipped with t2i (trained on the shapes world).

Examples:
    python -m t2i.generate "a large red circle in the center"
    python -m t2i.generate "a red circle" "a blue square" -n 8 --seed 1 --grid
    python -m t2i.generate "a green triangle" --model runs/shapes/pipeline --rerank 16
    python -m t2i.generate "a red circle below a cyan square" --init-image in.png --prime-rows 3
    python -m t2i.generate "a small blue square in the top left" --route unclip
    python -m t2i.generate "a red circle" --route ldm --steps 20 --negative-prompt "a square"
    python -m t2i.generate "a red circle" --route ldm --init-image in.png --strength 0.6
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from PIL import Image, PngImagePlugin

from t2i._version import __version__
from t2i.cli import OneLineParser, at_least, finite, fraction

logger = logging.getLogger("t2i.generate")


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = OneLineParser(
        prog="python -m t2i.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more captions")
    p.add_argument("--model", help="a saved pipeline directory (default: the shipped one)")
    p.add_argument("--version", action="version", version=f"t2i {__version__}")
    p.add_argument("-n", "--num-images", type=at_least(1), default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same images)")
    p.add_argument("--out", default="outputs", help="folder for the PNG files")
    p.add_argument("--grid", action="store_true", help="also write one grid per prompt")
    p.add_argument(
        "--temperature",
        type=finite,
        help="sampling temperature of the prior (unclip: of the decoder; default: the pipeline's)",
    )
    p.add_argument("--top-k", type=at_least(1), help="sample among the k likeliest codes")
    p.add_argument(
        "--top-p", type=fraction(open_below=True), help="nucleus sampling threshold, in (0, 1]"
    )
    p.add_argument(
        "--guidance-scale",
        type=finite,
        help="classifier-free guidance of the prior (unclip: of the decoder; default: the "
        "pipeline's)",
    )
    p.add_argument(
        "--rerank",
        type=at_least(1),
        default=None,
        metavar="N",
        help="draw N candidates per prompt and keep the -n best by CLIP score",
    )
    p.add_argument(
        "--init-image",
        help="dalle/unclip: an image whose top code rows prime the sample; ldm: the image to "
        "start from (image-to-image)",
    )
    p.add_argument(
        "--prime-rows", type=at_least(0), default=2, help="code rows kept from --init-image"
    )
    p.add_argument(
        "--strength",
        type=fraction(open_below=False),
        help="ldm: how far --init-image is noised, 0 (kept) to 1 (default: the pipeline's)",
    )
    p.add_argument(
        "--route",
        choices=("dalle", "unclip", "ldm"),
        default="dalle",
        help="dalle: the prior reads the caption; unclip: a diffusion prior draws a CLIP "
        "image embedding that the decoder reads; ldm: latent diffusion reading the caption",
    )
    p.add_argument("--negative-prompt", help="ldm: what guidance steers away from")
    p.add_argument(
        "--sampler",
        choices=("ddim", "dpm", "euler", "unipc"),
        help="ldm: the scheduler (default: the pipeline's)",
    )
    p.add_argument(
        "--prior-guidance-scale",
        type=finite,
        help="the diffusion prior's guidance (default: the pipeline's)",
    )
    p.add_argument(
        "--steps",
        type=at_least(1),
        help="denoising steps of the diffusion prior (ldm: of the denoiser; default: the "
        "pipeline's)",
    )
    p.add_argument(
        "--prior-candidates",
        type=at_least(1),
        help="the diffusion prior's draws per image, the closest to the caption kept "
        "(default: the pipeline's)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p


def resolve_device(name: str) -> str:
    """ "auto" -> CUDA when present; "cuda" without CUDA is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (use --device cpu or auto)")
    return name


def slug(text: str, width: int = 48) -> str:
    """A file-name-safe form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:width] or "prompt"


def png_info(prompt: str, settings: dict) -> PngImagePlugin.PngInfo:
    """PNG text chunks with the prompt and the settings that made the image."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("t2i", json.dumps(settings, sort_keys=True))
    return info


def save_images(
    images: list, prompts: list[str], n: int, out: Path, settings: dict, grid: bool
) -> list[Path]:
    """Write each prompt's n images (and a grid when asked); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p, prompt in enumerate(prompts):
        own = images[p * n : (p + 1) * n]
        stem = f"{p:02d}_{slug(prompt)}_s{settings['seed']}"
        for i, image in enumerate(own):
            path = out / f"{stem}_{i}.png"
            image.save(path, pnginfo=png_info(prompt, {**settings, "index": i}))
            paths.append(path)
        if grid:
            path = out / f"{stem}_grid.png"
            image_grid(own).save(path, pnginfo=png_info(prompt, settings))
            paths.append(path)
    return paths


def image_grid(images: list[Image.Image]) -> Image.Image:
    """Images side by side in one row, one pixel apart."""
    w, h = images[0].size
    grid = Image.new("RGB", (len(images) * (w + 1) - 1, h), "white")
    for i, image in enumerate(images):
        grid.paste(image, (i * (w + 1), 0))
    return grid


def run(args: argparse.Namespace) -> list[Path]:
    """Load the pipeline, generate, and write the images; return the paths written."""
    for i, prompt in enumerate(args.prompts):
        if not prompt.strip():
            raise ValueError(f"prompt {i + 1} is empty; give a caption")
    if args.model is not None and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such directory")
    import torch  # the heavy imports come after the arguments are checked

    from t2i.pipelines import load_pipeline

    device = resolve_device(args.device)
    pipe = load_pipeline(args.model, device=device, route=args.route)
    init = Image.open(args.init_image) if args.init_image else None
    prime_rows = args.prime_rows if init and args.route != "ldm" else 0
    common = dict(top_k=args.top_k, top_p=args.top_p, num_prime_rows=prime_rows)
    if args.route == "ldm":
        common = {}  # no codes to sample or prime
        route = dict(
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.steps,
            negative_prompt=args.negative_prompt,
            sampler=args.sampler,
            strength=args.strength,
        )
    elif args.route == "unclip":
        route = dict(
            decoder_guidance_scale=args.guidance_scale,
            decoder_temperature=args.temperature,
            prior_guidance_scale=args.prior_guidance_scale,
            num_inference_steps=args.steps,
            prior_candidates=args.prior_candidates,
        )
    else:
        route = dict(guidance_scale=args.guidance_scale, temperature=args.temperature)
    result = pipe(
        args.prompts,
        num_images_per_prompt=args.num_images,
        generator=torch.Generator().manual_seed(args.seed),
        image=init,
        rerank=args.rerank,
        **common,
        **route,
    )
    settings = dict(
        model=args.model or "default",
        seed=args.seed,
        route=args.route,
        init_image=args.init_image,
        prime_rows=prime_rows,
        **({"negative_prompt": args.negative_prompt} if args.route == "ldm" else {}),
        **result.settings.as_dict(),  # as the pipeline used them
    )
    return save_images(
        result.images, args.prompts, args.num_images, Path(args.out), settings, args.grid
    )


def main(argv: list[str] | None = None) -> int:
    """The command line; bad input is a one-line error and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        paths = run(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
