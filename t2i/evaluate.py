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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

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
from t2i.models import load_model, load_reader
from t2i.training.inputs import needs

logger = logging.getLogger("t2i.evaluate")

ROUTE_NAMES = {"dalle": "DALL-E", "unclip": "unCLIP", "ldm": "latent diffusion"}

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
            return yaml.safe_load(config.read_text()).get("data") or {}
    return {}


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
    """The command line: `python -m t2i.evaluate MODEL --suite shapes [--n N] [--out FILE]`."""
    parser = argparse.ArgumentParser(
        prog="python -m t2i.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a saved model directory, a run directory or a pipeline")
    parser.add_argument("--suite", choices=["shapes"], default="shapes")
    parser.add_argument("--n", type=int, default=1000, help="test images per measurement")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="the tokenizer a model reads (default: its run's)")
    parser.add_argument("--clip", help="the CLIP a model reads (default: its run's)")
    parser.add_argument(
        "--images-per-prompt", type=int, default=4, help="a pipeline's images per test prompt"
    )
    every = [name for table in ROUTE_SETTINGS.values() for name in table]
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=every,
        metavar="NAME",
        help=f"a pipeline's sampling settings to score (default: all it has): {', '.join(every)}",
    )
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if (Path(args.model) / "model_index.json").is_file():
            results = evaluate_saved_pipeline(args)
        else:
            results = evaluate_saved_model(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _report(args, results)


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

    holdout = run_data(str(Path(args.model) / "prior")).get("holdout") or None
    bundle = TextToImagePipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    bundle = bundle.to(_device())
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


def _report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    """Print the results as JSON (and write them to --out)."""
    text = json.dumps({"model": str(args.model), "suite": args.suite, **results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
