"""Evaluate a trained model: `python -m t2i.evaluate MODEL --suite shapes` prints metrics as JSON.

MODEL is a saved model directory (a run's `model/`) or a run directory. The shapes suite
scores a held-back test set of the shapes world (data seed 1000, never used for training):
- every model: its loss terms averaged over the test set (for the VAEs the test ELBO in nats
  per image and bits per dim);
- latent-variable models (`kl_per_dim`): the mean KL of each latent dimension and the number
  of active dimensions (mean KL above 0.01 nats);
- text-conditioned models (`generate`): the judge's prompt fidelity on one-object prompts and
  on two-object prompts, with per-attribute accuracies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from t2i.data.shapes import ShapesDataset
from t2i.data.text import CaptionCollator
from t2i.evaluation import judge_many
from t2i.models import MODELS

logger = logging.getLogger("t2i.evaluate")

TEST_SEED = 1000  # the shapes test split; training configs use seeds 0 (train) and 1 (val)
ACTIVE_KL = 0.01  # nats: a latent dimension with more mean KL than this is "active"


def load_model(path: str | Path) -> torch.nn.Module:
    """Load a saved t2i model from its directory (or from a run directory's `model/`).

    Args:
        path: a directory with config.json and safetensors weights, or a run directory.
    """
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json; pass a saved model or run directory")
    class_name = json.loads(config_file.read_text()).get("_class_name")
    by_name = {cls.__name__: cls for cls in MODELS.values()}
    if class_name not in by_name:
        raise ValueError(
            f"{config_file}: _class_name={class_name!r} is not a t2i model "
            f"({', '.join(sorted(by_name))})"
        )
    return by_name[class_name].from_pretrained(str(path))


def _loader(model: torch.nn.Module, n: int, num_objects: int | None, batch_size: int) -> DataLoader:
    """The shapes test set at the model's image size, batched with its caption length."""
    size = getattr(model.config, "image_size", 32)
    data = ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=num_objects)
    context = getattr(model.config, "context_length", 32)
    return DataLoader(data, batch_size=batch_size, collate_fn=CaptionCollator(context))


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to `device`."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def loss_terms(model: torch.nn.Module, loader: DataLoader, seed: int = 0) -> dict[str, float]:
    """The model's `training_losses` terms averaged over a data set, in eval mode."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for batch in loader:
        n = batch["pixel_values"].shape[0]
        for k, v in model.training_losses(_to(batch, device)).items():
            if v.numel() == 1:
                sums[k] += v.item() * n
        count += n
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def latent_usage(model: torch.nn.Module, loader: DataLoader) -> dict[str, Any]:
    """Mean KL per latent dimension over a data set and the count of active dimensions."""
    device = next(model.parameters()).device
    total, count = None, 0
    for batch in loader:
        kl = model.kl_per_dim(batch["pixel_values"].to(device)).float().sum(0)  # (D,)
        total = kl if total is None else total + kl
        count += batch["pixel_values"].shape[0]
    per_dim = (total / count).cpu()
    return {
        "kl_per_dim": [round(v, 4) for v in per_dim.tolist()],
        "active_dims": int((per_dim > ACTIVE_KL).sum()),
        "latent_dims": per_dim.numel(),
    }


@torch.no_grad()
def fidelity(model: torch.nn.Module, loader: DataLoader, seed: int = 0) -> dict[str, float]:
    """The judge's prompt fidelity of images the model generates from the test captions."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    images, specs = [], []
    for batch in loader:
        images.extend(model.generate(batch["input_ids"].to(device), generator=generator).cpu())
        specs.extend(batch["spec"])
    return judge_many(images, specs)


def evaluate_shapes(
    model: torch.nn.Module, n: int = 1000, batch_size: int = 100, seed: int = 0
) -> dict[str, Any]:
    """The shapes suite (see the module docstring) for one model.

    Args:
        model: a t2i model, in any mode (it is put in eval mode).
        n: test images per measurement.
        batch_size: images per forward pass.
        seed: seeds sampling noise, so two evaluations agree.
    """
    model.eval()
    results: dict[str, Any] = {
        "test_images": n,
        "loss_terms": loss_terms(model, _loader(model, n, None, batch_size), seed),
    }
    if hasattr(model, "kl_per_dim"):
        results["latents"] = latent_usage(model, _loader(model, n, None, batch_size))
    if hasattr(model, "generate"):
        results["fidelity_one_object"] = fidelity(model, _loader(model, n, 1, batch_size), seed)
        results["fidelity_two_objects"] = fidelity(model, _loader(model, n, 2, batch_size), seed)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m t2i.evaluate MODEL --suite shapes [--n N] [--out FILE]`."""
    parser = argparse.ArgumentParser(
        prog="python -m t2i.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a saved model directory or a run directory")
    parser.add_argument("--suite", choices=["shapes"], default="shapes")
    parser.add_argument("--n", type=int, default=1000, help="test images per measurement")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_shapes(model, n=args.n, batch_size=args.batch_size, seed=args.seed)
    text = json.dumps({"model": str(args.model), "suite": args.suite, **results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
