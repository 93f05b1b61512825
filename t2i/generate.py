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
    python -m t2i.generate "a green triangle" --route maskgit --steps 8
    python -m t2i.generate "a red circle" --route maskgit --init-image in.png --mask-image m.png
    python -m t2i.generate --prompts-file prompts.txt --dtype bfloat16
    python -m t2i.generate --from-png outputs/00_a_red_circle_s0_i1.png   # the same image again

Image i of a prompt is drawn from seed + i (with --rerank, candidate i), whatever -n and the
other prompts are, so an image can be drawn again from its PNG: its metadata holds the
prompt, the negative prompt, the route, every setting as used, the seed and index, the model
and a hash of its weights, and the t2i version. No file is overwritten: a name in use gets
a numbered suffix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from t2i._version import __version__
from t2i.cli import (
    ROUTE_NAMES,
    OneLineParser,
    at_least,
    between,
    check_model,
    default_route,
    finite,
    fraction,
    pipeline_path,
    read_lora_config,
)
from t2i.config import read_text

logger = logging.getLogger("t2i.generate")
DTYPES = ("float32", "bfloat16", "float16")
MAX_UPSCALE = 64  # a 32 px image to 2,048 px; 100,000 filled the memory and was killed
# memory per image drawn in a batch: measured 1.8 MB (the shipped default, DALL-E route) and
# 0.7 MB (emoji, 32 px) on the CPU (docs/BENCHMARKS.md); 256 MiB leaves room for a user's
# pipeline of larger images and wider models
IMAGE_BYTES = 256 * 2**20
MAX_BATCH_IMAGES = 64
GRID_CELL = 128  # grids enlarge small images (nearest-neighbour) to at least this many pixels
# the flags --from-png takes from the PNG (given with it, they are refused)
REPLAYED = (
    "prompts",
    "prompts_file",
    "num_images",
    "seed",
    "temperature",
    "top_k",
    "top_p",
    "guidance_scale",
    "rerank",
    "init_image",
    "mask_image",
    "prime_rows",
    "strength",
    "route",
    "negative_prompt",
    "sampler",
    "prior_guidance_scale",
    "steps",
    "prior_candidates",
    "upscale",
    "dtype",
    "grid",
    "lora",
    "lora_scale",
)


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = OneLineParser(
        prog="python -m t2i.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="one or more captions")
    p.add_argument(
        "--prompts-file", metavar="FILE", help="a text file of prompts, one a line (with PROMPT)"
    )
    p.add_argument(
        "--from-png",
        metavar="FILE",
        help="draw again the image a PNG written by t2i.generate holds, from its metadata "
        "(with --model when the model moved, --out, --device)",
    )
    p.add_argument("--model", help="a saved pipeline directory (default: the shipped one)")
    p.add_argument("--version", action="version", version=f"t2i {__version__}")
    p.add_argument("-n", "--num-images", type=at_least(1), default=4, help="images per prompt")
    p.add_argument(
        "--seed",
        type=at_least(0),
        default=0,
        help="image i of each prompt is drawn from seed + i (same seed, same images)",
    )
    p.add_argument("--out", default="outputs", help="folder for the PNG files")
    p.add_argument("--grid", action="store_true", help="also write one square grid per prompt")
    p.add_argument(
        "--upscale",
        type=between(1, MAX_UPSCALE),
        metavar="K",
        help="enlarge the written images K times, nearest-neighbour, for viewing (default: "
        "images as drawn, grids to at least 128 px a cell)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the weights' and activations' type (bfloat16 / float16: on a GPU)",
    )
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
        type=at_least(0),
        default=None,
        metavar="N",
        help="draw N candidates per prompt and keep the -n best by CLIP score (0: no "
        "reranking; default: the pipeline's recorded setting)",
    )
    p.add_argument(
        "--init-image",
        help="dalle/unclip: an image whose top code rows prime the sample; ldm: the image to "
        "start from (image-to-image); maskgit: the image to inpaint (with --mask-image)",
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
        choices=ROUTE_NAMES,
        help="(default: dalle when the pipeline has it, else its first route) "
        "dalle: the prior reads the caption; unclip: a diffusion prior draws a CLIP "
        "image embedding that the decoder reads; ldm: latent diffusion reading the caption; "
        "maskgit: a masked prior draws all codes in --steps parallel steps",
    )
    p.add_argument(
        "--mask-image",
        metavar="FILE",
        help="maskgit: inpainting: white where --init-image is redrawn, black where it is kept",
    )
    p.add_argument(
        "--negative-prompt",
        help="what guidance steers away from (dalle: the prior's; unclip: the diffusion "
        "prior's; ldm: the denoiser's)",
    )
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
        help="denoising steps of the diffusion prior (ldm: of the denoiser; maskgit: parallel "
        "decoding steps; default: the pipeline's)",
    )
    p.add_argument(
        "--prior-candidates",
        type=at_least(1),
        help="the diffusion prior's draws per image, the closest to the caption kept "
        "(default: the pipeline's)",
    )
    p.add_argument(
        "--batch-size",
        type=at_least(1),
        help="prompts drawn at once; each batch's files are written as it ends (default: "
        "as many as half the free memory holds, at most 64 images)",
    )
    p.add_argument(
        "--lora",
        metavar="DIR",
        help="LoRA adapters to draw with (a LoRA fine-tuning's output, made from --model)",
    )
    p.add_argument(
        "--lora-scale",
        type=finite,
        default=1.0,
        help="how much of the adapters' update (0: the base pipeline; default 1)",
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


def png_info(prompt: str, record: dict) -> PngImagePlugin.PngInfo:
    """PNG text chunks: the prompt, and (as JSON, "t2i") everything that drew the image."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("t2i", json.dumps(record, sort_keys=True))
    return info


def free_path(folder: Path, stem: str, taken: set[Path]) -> Path:
    """folder/stem.png, or folder/stem-2.png, -3, ... when that name is in use (on disk or
    by this call): nothing written before is replaced."""
    path, k = folder / f"{stem}.png", 1
    while path.exists() or path in taken:
        k += 1
        path = folder / f"{stem}-{k}.png"
    taken.add(path)
    return path


def write_png(image: Image.Image, path: Path, info: PngImagePlugin.PngInfo) -> None:
    """Write a PNG that must not exist yet (exclusive create: never replaces a file)."""
    with path.open("xb") as f:
        image.save(f, format="PNG", pnginfo=info)


def upscaled(image: Image.Image, k: int) -> Image.Image:
    """The image k times larger, nearest-neighbour (pixels stay sharp squares)."""
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.NEAREST)


def image_grid(images: list[Image.Image]) -> Image.Image:
    """A square-ish mosaic (ceil(sqrt(n)) columns), one pixel apart, on white."""
    w, h = images[0].size
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * (w + 1) - 1, rows * (h + 1) - 1), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * (w + 1), (i // cols) * (h + 1)))
    return grid


def save_images(
    images: list,
    prompts: list[str],
    n: int,
    out: Path,
    record: dict,
    grid: bool,
    upscale: int | None,
    first_index: int = 0,
    first_prompt: int = 0,
) -> list[Path]:
    """Write each prompt's n images (and a grid when asked) under names not in use; return the
    paths. Each image's metadata is `record` with its prompt and index (first_index + i);
    file names number the prompts from `first_prompt` (a batch's place in the whole list)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    taken: set[Path] = set()
    for p, prompt in enumerate(prompts, start=first_prompt):
        own = images[(p - first_prompt) * n : (p - first_prompt + 1) * n]
        stem = f"{p:02d}_{slug(prompt)}_s{record['seed']}"
        entry = {**record, "prompt": prompt}
        for i, image in enumerate(own, start=first_index):
            path = free_path(out, f"{stem}_i{i}", taken)
            info = png_info(prompt, {**entry, "index": i})
            write_png(upscaled(image, upscale or 1), path, info)
            paths.append(path)
        if grid:
            k = upscale or max(1, math.ceil(GRID_CELL / max(own[0].size)))
            path = free_path(out, f"{stem}_grid", taken)
            write_png(image_grid([upscaled(im, k) for im in own]), path, png_info(prompt, entry))
            paths.append(path)
    return paths


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts given and those of --prompts-file (blank lines skipped), checked."""
    prompts = list(args.prompts)
    if args.prompts_file is not None:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path}: no such file")
        try:
            lines = read_text(path).splitlines()  # a byte-order mark is no prompt's
        except ValueError as err:
            raise ValueError(f"--prompts-file {err}") from None
        prompts += [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise ValueError(f"--prompts-file {path}: no prompt in it")
    if not prompts:
        raise ValueError("no prompt: give PROMPT, --prompts-file FILE or --from-png FILE")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise ValueError(f"prompt {i + 1} is empty; give a caption")
    return prompts


def check_out(out: Path) -> None:
    """Refuse an --out that is a file or cannot be written, before any slow work."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {parent} cannot be written")
    missing = [p for p in [out, *out.parents] if not p.exists()]  # deepest first
    if missing:  # the one sure test (root passes os.access on /proc), then nothing left
        try:
            out.mkdir(parents=True)
        except OSError as err:
            raise ValueError(f"--out {out}: cannot be created ({err.strerror})") from None
        for folder in missing:
            folder.rmdir()


def weights_hash(model: Path, names: list[str]) -> str:
    """A hash of the weights of a saved pipeline's components `names` (16 hex digits)."""
    from t2i.pipelines.common import weights_id

    digest = hashlib.sha256()
    for name in sorted(names):
        if any((model / name).glob("*.safetensors")):
            digest.update(f"{name}:{weights_id(model / name)}\0".encode())
    return digest.hexdigest()[:16]


def read_record(path: str) -> dict:
    """The t2i metadata of a PNG that t2i.generate wrote, checked."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--from-png {file}: no such file")
    try:
        with Image.open(file) as image:
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, SyntaxError) as err:
        raise ValueError(f"--from-png {file}: not an image ({err})") from None
    if "t2i" not in text:
        raise ValueError(f"--from-png {file}: no t2i metadata (not written by t2i.generate)")
    try:
        record = json.loads(text["t2i"])
    except json.JSONDecodeError:
        raise ValueError(f"--from-png {file}: its t2i metadata is not JSON") from None
    if not isinstance(record, dict):
        raise ValueError(f"--from-png {file}: its t2i metadata is not a mapping")
    missing = [k for k in ("prompt", "index", "seed", "route", "model") if k not in record]
    if missing or "t2i_version" not in record:
        raise ValueError(
            f"--from-png {file}: its metadata lacks {', '.join(missing) or 't2i_version'} "
            "(a grid, or a PNG of an older t2i, cannot be drawn again)"
        )
    for field, (ok, words) in RECORD_RULES.items():
        if field in record and not ok(record[field]):
            raise ValueError(
                f"--from-png {file}: its t2i metadata has {field}={record[field]!r}; it must be "
                f"{words}"
            )
    return record


def _whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _path(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


RECORD_RULES: dict[str, tuple[Any, str]] = {  # a PNG's t2i metadata, which anyone can edit
    "prompt": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty prompt"),
    "index": (_whole, "a whole number >= 0"),
    "seed": (_whole, "a whole number >= 0"),
    "route": (lambda v: v in ROUTE_NAMES, "dalle, unclip, ldm or maskgit"),
    "model": (lambda v: isinstance(v, str) and bool(v), "a pipeline's folder or name"),
    "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "prime_rows": (_whole, "a whole number >= 0"),
    "upscale": (
        lambda v: v is None or (_whole(v, 1) and v <= MAX_UPSCALE),
        f"null or a whole number in [1, {MAX_UPSCALE}]",
    ),
    "negative_prompt": (lambda v: v is None or isinstance(v, str), "null or a prompt"),
    "init_image": (_path, "null or a file"),
    "mask_image": (_path, "null or a file"),
    "lora": (_path, "null or a folder"),
    "lora_scale": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
        "a number >= 0",
    ),
}


def replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """--from-png: the arguments that drew the PNG's image (its prompt alone, n = index + 1;
    an image depends on its prompt, seed and index only), with the PNG's record."""
    defaults = vars(parser.parse_args(["x"]))
    given = [k for k in REPLAYED if k != "prompts" and getattr(args, k) != defaults[k]]
    if args.prompts or given:
        flag = "PROMPT" if args.prompts else "--" + given[0].replace("_", "-")
        raise ValueError(
            f"--from-png takes every setting from its PNG; {flag} cannot be given with it"
        )
    record = read_record(args.from_png)
    model = args.model or (None if record["model"] == "default" else record["model"])
    replayed = dict(
        prompts=[record["prompt"]],
        num_images=record["index"] + 1,
        seed=record["seed"],
        route=record["route"],
        negative_prompt=record.get("negative_prompt"),
        init_image=record.get("init_image"),
        mask_image=record.get("mask_image"),
        prime_rows=record.get("prime_rows", 0),
        upscale=record.get("upscale"),
        dtype=record.get("dtype", "float32"),
        lora=record.get("lora"),
        lora_scale=record.get("lora_scale", 1.0),
        model=model,
        record=record,
    )
    return argparse.Namespace(**{**vars(args), **replayed})


def saved_index(model: str | None) -> dict:
    """The model_index.json of a saved pipeline (None: the shipped default), read without
    importing torch; {} when there is none (loading it reports that)."""
    index = pipeline_path(model) / "model_index.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def check_route(route: str, index: dict, model: str | None) -> None:
    """A ValueError, before anything loads, for a route the pipeline does not record."""
    routes = index.get("_t2i_routes")
    if isinstance(routes, list) and routes and route not in routes:
        raise ValueError(
            f"--route {route}: {model or 'the default pipeline'} has the {', '.join(routes)} "
            f"route{'s' if len(routes) > 1 else ''} only"
        )


def check_image(path: str | None, flag: str) -> None:
    """A ValueError naming the flag for a file that is not an image PIL reads."""
    if path is None:
        return
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{flag} {path}: not an image ({err})") from None


def check_mask_image(args: argparse.Namespace) -> None:
    """--mask-image goes with --init-image on the masked route, and names a file."""
    if args.mask_image is None:
        if args.route == "maskgit" and args.init_image is not None:
            raise ValueError(
                "--init-image on --route maskgit inpaints: give --mask-image (white: redrawn)"
            )
        return
    if args.route != "maskgit":
        raise ValueError(f"--mask-image: inpainting is on --route maskgit, not {args.route}")
    if args.init_image is None:
        raise ValueError("--mask-image needs --init-image, the image to inpaint")
    if not Path(args.mask_image).is_file():
        raise FileNotFoundError(f"--mask-image {args.mask_image}: no such file")


def file_hash(path: str | Path) -> str:
    """A hash of a file's bytes (16 hex digits)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def lora_hash(folder: str | Path) -> str:
    """A hash of a LoRA adapter folder's weights file (16 hex digits)."""
    return file_hash(Path(folder) / "lora.safetensors")


def lora_record(args: argparse.Namespace) -> dict:
    """What a PNG records of the adapters it was drawn with (nothing without --lora)."""
    if args.lora is None:
        return {}
    return dict(lora=str(args.lora), lora_hash=lora_hash(args.lora), lora_scale=args.lora_scale)


def route_arguments(args: argparse.Namespace) -> dict:
    """The pipeline call's settings from the flags (None: the pipeline's recorded value)."""
    if args.route == "ldm":
        return dict(
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.steps,
            sampler=args.sampler,
            strength=args.strength,
        )
    common = dict(top_k=args.top_k, top_p=args.top_p)
    if args.route == "maskgit":
        return dict(
            guidance_scale=args.guidance_scale,
            temperature=args.temperature,
            num_inference_steps=args.steps,
            **common,
        )
    if args.route == "unclip":
        return dict(
            decoder_guidance_scale=args.guidance_scale,
            decoder_temperature=args.temperature,
            prior_guidance_scale=args.prior_guidance_scale,
            num_inference_steps=args.steps,
            prior_candidates=args.prior_candidates,
            **common,
        )
    return dict(guidance_scale=args.guidance_scale, temperature=args.temperature, **common)


def check_ldm_steps(args: argparse.Namespace, index: dict, model: Path) -> None:
    """The latent route's steps on its saved noise schedule, before any weights load: a
    ValueError naming --steps where DPM-Solver++ or UniPC would land two steps on one
    timestep (and divide by zero). Settings it cannot resolve here are left to the
    pipeline's own checks."""
    from t2i.nn.diffusion import SAMPLERS, TimestepsError, stepped_scheduler

    recorded = index.get("_t2i_sampling") or {}
    sampler = args.sampler or recorded.get("ldm_sampler")
    steps = args.steps or recorded.get("ldm_num_inference_steps")
    config = model / "scheduler" / "scheduler_config.json"
    if sampler not in SAMPLERS or not isinstance(steps, int) or not config.is_file():
        return
    try:
        stepped_scheduler(sampler, json.loads(config.read_text()), steps)
    except TimestepsError as err:
        raise ValueError(f"--steps {steps} --sampler {sampler}: {err}") from None
    except (ValueError, TypeError):  # a damaged schedule: named when the pipeline loads
        return


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> list[Path]:
    """Check the arguments, load the pipeline, generate, and write the images; return the
    paths written."""
    record = None
    if args.from_png is not None:
        args = replay(args, parser or build_parser())
        record = args.record
    prompts = read_prompts(args)
    check_model(args.model, pipeline=True)
    index = saved_index(args.model)
    if args.init_image is not None and not Path(args.init_image).is_file():
        raise FileNotFoundError(f"--init-image {args.init_image}: no such file")
    if args.route is None:
        args.route = default_route(index)
    check_route(args.route, index, args.model)
    check_mask_image(args)
    for flag in ("init_image", "mask_image"):
        check_image(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.lora is not None:
        read_lora_config(args.lora)
    elif args.lora_scale != 1.0:
        raise ValueError("--lora-scale scales the adapters of --lora: give --lora too")
    if record is not None and args.lora is not None:
        if record.get("lora_hash") != lora_hash(args.lora):
            raise ValueError(f"--from-png {args.from_png}: its LoRA adapters {args.lora} changed")
    for key in ("init_image", "mask_image"):
        want = (record or {}).get(key + "_hash")
        if want is not None and want != file_hash(getattr(args, key)):
            words = key.replace("_", " ")
            raise ValueError(
                f"--from-png {args.from_png}: its {words} {getattr(args, key)} changed"
            )
    out = Path(args.out)
    check_out(out)
    import dataclasses

    import torch  # the heavy imports come after the arguments are checked

    device = resolve_device(args.device)
    if args.route == "ldm" and record is None:
        check_ldm_steps(args, index, pipeline_path(args.model))
    from t2i.pipelines import load_pipeline
    from t2i.pipelines.common import check_setting

    pipe = load_pipeline(
        args.model, device=device, route=args.route, torch_dtype=getattr(torch, args.dtype)
    )
    if args.lora is not None:
        pipe.load_lora_weights(args.lora, scale=args.lora_scale)
    model = pipeline_path(args.model)
    model_hash = weights_hash(model, list(pipe.components))
    if record is not None and record.get("model_hash") != model_hash:
        raise ValueError(
            f"--from-png {args.from_png}: drawn by a model with weights "
            f"{record.get('model_hash')}; {args.model or 'the default'} holds {model_hash} "
            "(pass --model with the pipeline that drew it)"
        )
    init = None
    if args.init_image:
        with Image.open(args.init_image) as image:
            init = image.convert("RGB")
    primes = args.route in ("dalle", "unclip")  # the routes over codes drawn in order
    prime_rows = args.prime_rows if init and primes else 0
    if record is not None:  # the settings as the PNG's call used them, checked
        fields = dataclasses.fields(pipe.settings_classes[0])
        settings = {f.name: record[f.name] for f in fields if f.name in record}
        for name, value in settings.items():
            try:
                check_setting(name, value)
            except ValueError as err:
                raise ValueError(
                    f"--from-png {args.from_png}: its t2i metadata has {err}"
                ) from None
    else:
        settings = {**route_arguments(args), "rerank": args.rerank}
    extra = {"num_prime_rows": prime_rows} if primes else {}
    if args.mask_image:
        with Image.open(args.mask_image) as mask:
            extra["mask_image"] = mask.convert("L")
    draws = pipe.draws(args.num_images, settings.get("rerank"))
    size = args.batch_size or auto_batch_size(draws, device)
    common = dict(
        t2i_version=__version__,
        model="default" if args.model is None else str(args.model),
        model_hash=model_hash,
        route=args.route,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
        init_image=args.init_image,
        init_image_hash=file_hash(args.init_image) if args.init_image else None,
        mask_image=args.mask_image,
        mask_image_hash=file_hash(args.mask_image) if args.mask_image else None,
        prime_rows=prime_rows,
        dtype=args.dtype,
        device=device,
        upscale=args.upscale,
        **lora_record(args),
    )
    paths: list[Path] = []
    try:
        for start in range(0, len(prompts), size):  # each batch's files written as it ends
            batch = prompts[start : start + size]
            result = pipe(
                batch,
                num_images_per_prompt=args.num_images,
                generator=[
                    torch.Generator().manual_seed(args.seed + j)
                    for _ in batch
                    for j in range(draws)
                ],
                negative_prompt=args.negative_prompt,
                image=init,
                **settings,
                **extra,
            )
            written = {**common, **result.settings.as_dict()}  # as the pipeline used them
            if record is not None:  # --from-png: the one image the PNG holds, its index
                index = record["index"]
                images = result.images[index : index + 1]
                return save_images(images, batch, 1, out, written, False, args.upscale, index)
            paths += save_images(
                result.images,
                batch,
                args.num_images,
                out,
                written,
                args.grid,
                args.upscale,
                first_prompt=start,
            )
    except KeyboardInterrupt:
        raise Interrupted(paths, len(prompts), out) from None
    return paths


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during generation: what was written before it (whole batches)."""

    def __init__(self, paths: list[Path], total: int, out: Path) -> None:
        super().__init__()
        self.paths, self.total, self.out = paths, total, out


def auto_batch_size(draws: int, device: str) -> int:
    """Prompts per batch from the memory free now: half of it, at IMAGE_BYTES per image
    drawn (over 100 times what the shipped pipelines take; --batch-size to set it), between
    1 and MAX_BATCH_IMAGES images."""
    import torch

    if device == "cuda":
        free = torch.cuda.mem_get_info()[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    images = max(1, min(MAX_BATCH_IMAGES, int(free * 0.5) // IMAGE_BYTES))
    return max(1, images // max(1, draws))


def main(argv: list[str] | None = None) -> int:
    """The command line; bad input is a one-line error and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        paths = run(args, parser)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        for path in stop.paths:
            print(path)
        print(
            f"interrupted: {len(stop.paths)} files written to {stop.out} (whole batches; "
            f"{stop.total} prompts asked)",
            file=sys.stderr,
        )
        return 130
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
