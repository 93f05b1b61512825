"""Evaluate a trained model: `python -m t2i.evaluate MODEL --suite shapes` prints metrics as JSON.

MODEL is a saved model directory (a run's `model/`) or a run directory. The shapes suite
scores a held-back test set of the shapes world (data seed 1000, never used for training):
- every model: its loss terms averaged over the test set (for the VAEs the test ELBO in nats
  per image and bits per dim; for priors over codes the test cross-entropy);
- latent-variable models (`kl_per_dim`): the mean KL of each latent dimension and the number
  of active dimensions (mean KL above 0.01 nats);
- image tokenizers and latent autoencoders: PSNR, the judge's prompt fidelity on originals
  and on reconstructions, and a tokenizer's codebook usage and perplexity of each level;
- CLIP models: zero-shot attribute accuracy on one-object images, text -> image recall@1
  and @5 among two-object images, and, when the run held attribute combinations out of
  training (its config.yaml's data.holdout), zero-shot accuracy on those beside seen ones;
- text-conditioned models (`generate`, or a caption-conditioned prior over codes): the judge's
  prompt fidelity on one-object prompts and on two-object prompts, with per-attribute
  accuracies.
A prior over codes is scored through its tokenizer: `--tokenizer PATH`, or by default the
`data.tokenizer` of the run's config.yaml.

MODEL may also be a saved pipeline (a directory with model_index.json, e.g. the shipped
default): its prompt fidelity, `--images-per-prompt` images for each of `--n` test prompts,
on one-object prompts, two-object relation prompts and (when its prior's training held
attribute combinations out) one-object prompts of those combinations; each under four
settings: plain sampling, classifier-free guidance, CLIP reranking, and both. With the
unCLIP route, the same prompts through it, the diffusion prior's image embeddings against
the text embeddings (cosine to the true image embedding), and the judge's agreement of
variations with their source image.

`--suite captioned --data DIR` scores a pipeline trained on a user's captioned images (any
layout `t2i.data.CaptionedDataset` reads; `t2i.evaluation.captioned` has the details) with an
evaluation CLIP trained apart from the pipeline on all of DIR (configs/custom/eval_clip.yaml,
or `--eval-clip-config`; `--eval-clip-steps N` sets its steps), once per data set and config:
it is cached in `--eval-clip-cache` (runs/eval_clip)/KEY, KEY a hash of DIR's usable records
(sources, captions, image sizes and modification times) and of the config; `--eval-clip PATH`
uses a trained one instead. The held-out images are those of `--split FILE` (another data
set's heldout.json, e.g. DIR's own for a pipeline trained on other data), else of the
pipeline's heldout.json, else the split recomputed from its prior's data config (`split`:
FILE, "heldout.json" or "recomputed").
The captions scored come in parts: `train`, and the held-out part `heldout`, or, when the
heldout.json names parts of it (`"parts": {NAME: [sources]}`, e.g. the emoji corpus's
cells, concepts and skin_tones), each of those instead. Every route (or those of `--routes`)
draws one image per caption, for up to `--n` captions of each part, at its recorded sampling
defaults (or those `--sampling NAME=VALUE` sets instead), never reranked. Keys (PART:
train, heldout, or each part named):
- `data`, `eval_clip` (its model folder), `split`, `n` (captions scored per part, and
  `heldout`: all held-out parts together), `r_precision_candidates` (captions ranked per
  image: 100, or all the data set has), `heldout_used` and `floor_used` (the sources of the
  real held-out and floor images);
- `style_classifier` (when the data set's metadata gives samples a `style`, two or more):
  `styles`, `images` and `accuracy` of a linear classifier of the evaluation CLIP's image
  embeddings fit to real training images' styles;
- `real`: `r_precision_PART` (R@1 of the real images: the ceiling), `style_right_PART` (with
  a style classifier: its accuracy on the real images), `clip_fid_floor`, `clip_kid_floor`
  ({mean, std, subset_size}: real training images against the real held-out ones);
- `routes`: per route `r_precision_PART`, `style_right_PART` (the share of its images whose
  predicted style is their caption's), `clip_fid` and `clip_kid` (its images of held-out
  captions against the real held-out images), `settings`, `images`, `seconds`,
  `images_per_s`;
- `image_tokenizer`: `psnr`, `codebook_usage`, `perplexity` on the held-out images; `vae`:
  `psnr` (a pipeline with the latent diffusion route).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # wrong paths are refused before the heavy imports below
    from t2i.cli import precheck_evaluate

    precheck_evaluate(sys.argv[1:])

import torch  # noqa: E402

from t2i.cli import (  # noqa: E402
    OneLineParser,
    check_eval_paths,
    evaluate_number_flags,
    pipeline_path,
)
from t2i.config import ExperimentConfig, load_config, read_yaml
from t2i.data.captioned import HELDOUT_FILE, CaptionedDataset, detect_format
from t2i.evaluation.captioned import cached_eval_clip, evaluate_captioned, heldout_split
from t2i.evaluation.models import (
    ACTIVE_KL,
    TEST_SEED,
    evaluate_clip,
    evaluate_model,
    evaluate_shapes,
)
from t2i.evaluation.pipelines import (
    ROUTE_SETTINGS,
    evaluate_pipeline,
    evaluate_unclip,
    route_of,
    variation_agreement,
)
from t2i.models import CLIPModel, load_model, load_reader
from t2i.pipelines.common import override_sampling
from t2i.training.inputs import needs

logger = logging.getLogger("t2i.evaluate")

ROUTE_NAMES = {
    "dalle": "DALL-E",
    "unclip": "unCLIP",
    "ldm": "latent diffusion",
    "maskgit": "masked (MaskGIT)",
}
EVAL_CLIP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "custom" / "eval_clip.yaml"

__all__ = [
    "ACTIVE_KL",
    "TEST_SEED",
    "evaluate_clip",
    "evaluate_model",
    "evaluate_pipeline",
    "evaluate_shapes",
    "evaluate_unclip",
    "main",
    "variation_agreement",
]


def run_data(model_path: str) -> dict:
    """The data section of the run config.yaml beside a saved model ({} when there is none)."""
    for config in (Path(model_path) / "config.yaml", Path(model_path).parent / "config.yaml"):
        if config.is_file():
            return read_yaml(config).get("data") or {}
    return {}


def route_run(pipeline: str) -> str:
    """The component of a saved pipeline whose run config names its data: the DALL-E prior,
    else the first route's model (a pipeline may hold any route alone)."""
    for name in ("prior", "masked_prior", "unet", "diffusion_prior"):
        if (Path(pipeline) / name / "config.json").is_file():
            return str(Path(pipeline) / name)
    return str(Path(pipeline) / "prior")


def load_readers(model_path: str, model: Any, given: dict[str, str | None]) -> dict[str, Any]:
    """The frozen models preparing what a model reads (`tokenizer`, `clip`): as given on the
    command line, else as its run's config.yaml names them (`data.tokenizer`, `data.clip`)."""
    data = run_data(model_path)
    readers = {}
    for key in needs(model.reads):
        found = given.get(key) or data.get(key)
        if not found:
            raise FileNotFoundError(
                f"{model_path} reads {key} outputs; pass --{key} (no run config.yaml names one)"
            )
        readers[key] = load_reader(key, found)
    return readers


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m t2i.evaluate MODEL [--suite shapes] [--n N] [--out FILE]`,
    or `python -m t2i.evaluate PIPELINE --suite captioned --data DIR [--n N]`."""
    parser = OneLineParser(
        prog="python -m t2i.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        help="a saved model directory, a run directory, a pipeline, or a shipped pipeline's name",
    )
    evaluate_number_flags(parser)
    parser.add_argument(
        "--data", help="--suite captioned: the captioned data set the pipeline learnt"
    )
    parser.add_argument("--tokenizer", help="the tokenizer a model reads (default: its run's)")
    parser.add_argument("--clip", help="the CLIP a model reads (default: its run's)")
    every = [name for table in ROUTE_SETTINGS.values() for name in table]
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=every,
        metavar="NAME",
        help=f"a pipeline's sampling settings to score (default: all it has): {', '.join(every)}",
    )
    _captioned_flags(parser)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_eval_paths(args.model, args.data, args.split, args.eval_clip, args.lora, args.grids)
        args.model = str(pipeline_path(args.model))  # "emoji": t2i/assets/emoji, as generate
        if args.lora is not None:
            if not (Path(args.model) / "model_index.json").is_file():
                raise ValueError(f"--lora {args.lora}: adapters go on a pipeline, not {args.model}")
            held = Path(args.lora) / HELDOUT_FILE
            if args.suite == "captioned" and args.split is None and held.is_file():
                args.split = str(held)  # the data the adapters learnt, as a pipeline's own
        if args.suite == "captioned":
            results = evaluate_captioned_suite(args)
        elif args.data is not None:
            raise ValueError("--data is read by --suite captioned only")
        elif (Path(args.model) / "model_index.json").is_file():
            results = evaluate_saved_pipeline(args)
        else:
            results = evaluate_saved_model(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.lora is not None:
        results = {"lora": args.lora, **results}
    return _report(args, results)


def _captioned_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the captioned suite (beside --data)."""
    parser.add_argument(
        "--routes", nargs="+", choices=list(ROUTE_NAMES), help="--suite captioned: routes scored"
    )
    parser.add_argument("--eval-clip", metavar="PATH", help="a trained evaluation CLIP to use")
    parser.add_argument(
        "--split",
        metavar="FILE",
        help="--suite captioned: a heldout.json to score against instead of the pipeline's "
        "(the data set's own, for a pipeline trained on other data)",
    )
    parser.add_argument(
        "--lora",
        metavar="DIR",
        help="a pipeline's LoRA adapters to score with (fused); --suite captioned holds out "
        "what their heldout.json names unless --split says",
    )
    parser.add_argument(
        "--eval-clip-cache",
        default="runs/eval_clip",
        metavar="DIR",
        help="where evaluation CLIPs are trained and kept, one per data set and config",
    )
    parser.add_argument(
        "--eval-clip-config",
        default=str(EVAL_CLIP_CONFIG),
        metavar="FILE",
        help="the evaluation CLIP's config (default: configs/custom/eval_clip.yaml)",
    )
    parser.add_argument(
        "--sampling",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="--suite captioned: score with these sampling settings instead of the recorded "
        "ones (ldm_guidance_scale=4 ldm_num_inference_steps=25): what a build would record",
    )
    parser.add_argument(
        "--grids",
        metavar="DIR",
        help="--suite captioned: also write, per route, grids of real images (top rows) over "
        "the images drawn for their captions (a new folder; captions in a .txt beside each)",
    )


def with_lora(bundle: Any, lora: str | None) -> Any:
    """A pipeline with a LoRA adapter folder's adapters loaded and fused (None: as it is)."""
    if lora is not None:
        bundle.load_lora_weights(lora)
        bundle.fuse_lora()
    return bundle


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_saved_model(args: argparse.Namespace) -> dict[str, Any]:
    """The model suite for a saved model or run directory."""
    model = load_model(args.model).to(_device())
    if hasattr(model, "text_features"):  # a text-image embedding model: CLIP's own suite
        holdout = run_data(args.model).get("holdout") or None
        return evaluate_clip(model, args.n, args.batch_size, holdout)
    readers = load_readers(args.model, model, {"tokenizer": args.tokenizer, "clip": args.clip})
    return evaluate_model(model, readers, args.n, args.batch_size, args.seed)


def evaluate_saved_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline suite: every route the bundle has (or those of --settings)."""
    from t2i.pipelines import TextToImagePipeline

    holdout = run_data(route_run(args.model)).get("holdout") or None
    bundle = TextToImagePipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    bundle = with_lora(bundle.to(_device()), args.lora)
    named = args.settings or [s for r in bundle.routes for s in ROUTE_SETTINGS[r]]
    missing = [n for n in named if route_of(n) not in bundle.routes]
    if missing:
        route = ROUTE_NAMES[route_of(missing[0])]
        raise ValueError(f"--settings {missing[0]}: {args.model} has no {route} route")
    ipp = args.images_per_prompt
    results = evaluate_pipeline(bundle, args.n, ipp, args.batch_size, args.seed, holdout, named)
    if any(route_of(n) == "unclip" for n in named):
        unclip = bundle.route("unclip")
        results["unclip"] = evaluate_unclip(
            unclip, args.n, ipp, args.batch_size, args.seed, holdout
        )
    return results


def evaluate_captioned_suite(args: argparse.Namespace) -> dict[str, Any]:
    """The captioned suite: every flag checked first, then the data split, the evaluation
    CLIP (trained once, or given) and the routes scored."""
    from t2i.pipelines import TextToImagePipeline

    data_path = _check_data_flag(args.data)  # (paths that are not there: check_eval_paths)
    if not (Path(args.model) / "model_index.json").is_file():
        raise ValueError(f"--suite captioned: {args.model} is not a saved pipeline")
    config = None if args.eval_clip else _eval_clip_config(args)
    bundle = TextToImagePipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    bundle = with_lora(bundle.to(_device()), args.lora)
    _check_routes(args.routes, bundle.routes, args.model)
    bundle.sampling_defaults = override_sampling(
        bundle.sampling_defaults, args.sampling, "--sampling"
    )
    prior_data = run_data(route_run(args.model))
    data = _read_data(data_path, bundle.image_size, prior_data)
    split = heldout_split(data, args.model, prior_data, args.split)
    if len(split.heldout) < 2:  # the distances need two
        raise ValueError(f"--data {data_path}: one held-out image; the suite needs at least 2")
    if config is None:
        clip_path = Path(args.eval_clip)
    else:
        config = _fit_to(config, data, prior_data)
        where = args.eval_clip_config
        clip_path = cached_eval_clip(config, data, args.eval_clip_cache, _train_one, where)
    clip = load_model(clip_path, kind=CLIPModel).to(_device()).eval()
    results = evaluate_captioned(
        bundle, clip, data, split, args.n, args.routes, args.batch_size, args.seed, args.grids
    )
    return {"data": str(data_path), "eval_clip": str(clip_path), **results}


def _check_routes(asked: list[str] | None, routes: list[str], model: str) -> None:
    """A ValueError naming --routes when the pipeline lacks a route asked for."""
    missing = [r for r in asked or [] if r not in routes]
    if missing:
        raise ValueError(f"--routes {missing[0]}: {model} has no {ROUTE_NAMES[missing[0]]} route")


def _check_data_flag(path: str | None) -> Path:
    """--data as a path to a data set that exists and is of a layout t2i reads."""
    if path is None:
        raise ValueError("--suite captioned needs --data DIR (the captioned data set)")
    try:
        detect_format(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise ValueError(_data_error(path, err)) from err
    return Path(path)


def _data_error(path: str | Path, err: Exception) -> str:
    """A one-line error naming --data."""
    if isinstance(err, FileNotFoundError):
        return f"--data {path}: no such file or folder"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"--data {text}" if text.startswith(str(path)) else f"--data {path}: {text}"


def _read_data(path: Path, image_size: int, prior_data: dict) -> CaptionedDataset:
    """The data set at the pipeline's image size, with its prior's caption and image columns."""
    columns = {k: prior_data.get(k) for k in ("caption_column", "image_column")}
    try:
        return CaptionedDataset(path, image_size, **columns)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise ValueError(_data_error(path, err)) from err


def _eval_clip_config(args: argparse.Namespace) -> ExperimentConfig:
    """The evaluation CLIP's config, --eval-clip-steps applied (warmup: at most a tenth)."""
    config = load_config(args.eval_clip_config)
    if args.eval_clip_steps is not None:
        if args.eval_clip_steps < 1:
            raise ValueError(f"--eval-clip-steps {args.eval_clip_steps}: must be at least 1")
        config.train.max_steps = args.eval_clip_steps
    config.train.warmup_steps = min(config.train.warmup_steps, config.train.max_steps // 10)
    return config


def _fit_to(config: ExperimentConfig, data: CaptionedDataset, prior_data: dict) -> ExperimentConfig:
    """The config on this data set: its path, columns and image size (the pipeline's), its
    patch size scaled with the image so the patch grid stays the config's (8 x 8 at 64 px as
    at 32), and a batch no larger than its training samples."""
    size, patch = config.model["image_size"], config.model.get("patch_size")
    if patch and size % patch == 0 and data.image_size % (size // patch) == 0:
        config.model["patch_size"] = data.image_size // (size // patch)
    elif patch and data.image_size % patch:
        raise ValueError(
            f"--eval-clip-config: model.patch_size={patch} does not divide the pipeline's "
            f"image size {data.image_size}"
        )
    config.data.path = str(data.path)
    config.data.caption_column = prior_data.get("caption_column")
    config.data.image_column = prior_data.get("image_column")
    config.data.image_size = config.model["image_size"] = data.image_size
    train_part, _ = data.split(config.data.num_val, config.data.seed)
    config.train.batch_size = min(config.train.batch_size, len(train_part))
    return config


def _train_one(config: ExperimentConfig, where: str) -> Any:
    """`t2i.train.run`: the one trainer (imported when an evaluation CLIP is trained)."""
    from t2i.train import run

    return run(config, where)


def _report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    """Print the results as JSON (and write them to --out)."""
    text = json.dumps({"model": str(args.model), "suite": args.suite, **results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
