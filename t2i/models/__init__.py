"""Model families by name: `MODELS[name]` is the class a training config's `model.type` picks;
`load_model(path)` loads any saved t2i model by the class its `config.json` names."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from t2i.models.base import T2IModel
from t2i.models.clip import CLIPModel, clip_score, rerank
from t2i.models.cvae import CVAE
from t2i.models.diffusion_decoder import DiffusionDecoder
from t2i.models.diffusion_prior import DiffusionPrior
from t2i.models.dvae import DiscreteVAE
from t2i.models.gumbel import CategoricalVAE
from t2i.models.pixelcnn import HierarchicalPixelCNN, PixelCNN
from t2i.models.prior import PRESETS, DALLEPrior
from t2i.models.tokenizer import ImageTokenizer
from t2i.models.vae import VAE
from t2i.models.vq import VQVAE, VQVAE2

MODELS: dict[str, type[T2IModel]] = {
    "vae": VAE,  # beta-VAE: VAE with beta != 1
    "cvae": CVAE,
    "categorical_vae": CategoricalVAE,
    "dvae": DiscreteVAE,
    "vqvae": VQVAE,
    "vqvae2": VQVAE2,
    "pixelcnn": PixelCNN,
    "pixelcnn_hierarchical": HierarchicalPixelCNN,
    "clip": CLIPModel,
    "dalle_prior": DALLEPrior,
    "diffusion_prior": DiffusionPrior,
    "diffusion_decoder": DiffusionDecoder,
}

TOKEN_PRIORS = (PixelCNN, HierarchicalPixelCNN, DALLEPrior)  # models of a tokenizer's code grids


def model_dir(path: str | Path) -> Path:
    """The saved-model folder of `path`: path itself, or a run directory's `model/`.

    Args:
        path: a folder with config.json and safetensors weights, or a run directory.
    """
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; pass a saved model or run directory")
    return path


def load_model(path: str | Path, torch_dtype: torch.dtype | None = None) -> T2IModel:
    """Load a saved t2i model of any family, by the `_class_name` of its config.json.

    Args:
        path: a saved model directory, or a run directory (its `model/` is loaded).
        torch_dtype: load the weights in this dtype (None: as saved).
    """
    path = model_dir(path)
    class_name = json.loads((path / "config.json").read_text()).get("_class_name")
    by_name = {cls.__name__: cls for cls in MODELS.values()}
    if class_name not in by_name:
        raise ValueError(
            f"{path / 'config.json'}: _class_name={class_name!r} is not a t2i model "
            f"({', '.join(sorted(by_name))})"
        )
    return by_name[class_name].from_pretrained(str(path), torch_dtype=torch_dtype)


__all__ = [
    "CLIPModel",
    "CVAE",
    "DALLEPrior",
    "DiffusionDecoder",
    "DiffusionPrior",
    "MODELS",
    "PRESETS",
    "VAE",
    "VQVAE",
    "VQVAE2",
    "CategoricalVAE",
    "DiscreteVAE",
    "HierarchicalPixelCNN",
    "ImageTokenizer",
    "PixelCNN",
    "T2IModel",
    "TOKEN_PRIORS",
    "load_model",
    "model_dir",
    "clip_score",
    "rerank",
]
