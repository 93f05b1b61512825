"""Model families by name: `MODELS[name]` is the class a training config's `model.type` picks
and `build_model` builds; `PRESETS` are named sizes; `load_model(path)` loads any saved t2i
model by the class its `config.json` names."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from t2i.models.autoencoder_kl import KLAutoencoder, LatentAutoencoder
from t2i.models.base import T2IModel, read_config, resolve_dtype
from t2i.models.clip import CLIPModel, clip_score, rerank
from t2i.models.cvae import CVAE
from t2i.models.diffusion_decoder import DiffusionDecoder
from t2i.models.diffusion_prior import DiffusionPrior
from t2i.models.dvae import DiscreteVAE
from t2i.models.gumbel import CategoricalVAE
from t2i.models.latent_diffusion import LatentDenoiser
from t2i.models.lora import CONFIG_FILE as LORA_CONFIG
from t2i.models.lora import load_lora, read_lora
from t2i.models.maskgit import MaskGITPrior
from t2i.models.pixelcnn import HierarchicalPixelCNN, PixelCNN
from t2i.models.prior import CodeTransformer, DALLEPrior
from t2i.models.tokenizer import ImageTokenizer
from t2i.models.vae import VAE
from t2i.models.vq import VQVAE, VQVAE2
from t2i.models.vq_latents import VQLatents
from t2i.models.vqmodel import VQModelTokenizer

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
    "maskgit_prior": MaskGITPrior,  # masked parallel decoding (MaskGIT / Muse)
    "diffusion_prior": DiffusionPrior,
    "diffusion_decoder": DiffusionDecoder,
    "autoencoder_kl": KLAutoencoder,
    "vq_latents": VQLatents,  # a VQ-VAE read through its pre-quantisation latents
    "latent_diffusion": LatentDenoiser,
    "vqmodel": VQModelTokenizer,  # a diffusers VQModel (LDM's VQ-f4/f8, aMUSEd) as a tokenizer
}

# Named sizes, as DiT / minGPT name theirs: `model: {type: dalle_prior, preset: prior-tiny}`
# (keys the section also sets win). name -> (model.type, constructor arguments).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "prior-tiny": ("dalle_prior", dict(dim=64, depth=2, heads=4)),
    "prior-small": ("dalle_prior", dict(dim=256, depth=6, heads=8)),
    "prior-base": ("dalle_prior", dict(dim=512, depth=12, heads=8)),
    "maskgit-tiny": ("maskgit_prior", dict(dim=64, depth=2, heads=4)),
    "maskgit-small": ("maskgit_prior", dict(dim=256, depth=6, heads=8)),
    "maskgit-base": ("maskgit_prior", dict(dim=512, depth=12, heads=8)),
}


def build_model(section: dict[str, Any], check: Any = None) -> T2IModel:
    """A new model from a config's model section: `type` (a key of `MODELS`), an optional
    `preset` (a key of `PRESETS` for that type), and the constructor's other arguments.

    Args:
        section: the model section.
        check: (constructor, kwargs) -> kwargs, validating the arguments (t2i.config's
            `check_kwargs` with the config's name); None passes them as they are.

    Raises:
        ValueError: an unknown type or preset, or a preset of another type.
    """
    kwargs = dict(section)
    name = kwargs.pop("type", None)
    if name not in MODELS:
        raise ValueError(
            f"model.type={name!r} is not a t2i model; choose one of: {', '.join(sorted(MODELS))}"
        )
    preset = kwargs.pop("preset", None)
    if preset is not None:
        kind, sizes = PRESETS.get(preset, (None, None))
        if kind != name:
            names = [k for k, (t, _) in PRESETS.items() if t == name]
            raise ValueError(
                f"model.preset={preset!r} is not a preset of {name} (its presets: "
                f"{', '.join(names) or 'none'})"
            )
        kwargs = {**sizes, **kwargs}
    cls = MODELS[name]
    return cls(**(check(cls.__init__, kwargs) if check else kwargs))


READER_KINDS: dict[str, type] = {  # a data key naming a model another reads -> its kind
    "tokenizer": ImageTokenizer,
    "clip": CLIPModel,
    "autoencoder": LatentAutoencoder,
}


def load_reader(key: str, path: str | Path) -> T2IModel:
    """The frozen model a data key (`tokenizer`, `clip`) names, in eval mode, checked to be of
    its kind.

    Args:
        key: a key of `READER_KINDS`.
        path: a saved model or run directory.
    """
    return load_model(path, kind=READER_KINDS[key]).eval().requires_grad_(False)


def model_type(model: T2IModel) -> str:
    """The `model.type` name of a model's class."""
    return next(name for name, cls in MODELS.items() if cls is type(model))


def class_of(path: str | Path) -> type[T2IModel]:
    """The t2i class a saved model directory's config.json names, without loading it.

    Args:
        path: a saved model directory, or a run directory.
    """
    config = model_dir(path) / "config.json"
    class_name = read_config(config).get("_class_name")
    by_name = {cls.__name__: cls for cls in MODELS.values()}
    if class_name not in by_name:
        raise ValueError(
            f"{config}: _class_name={class_name!r} is not a t2i model "
            f"({', '.join(sorted(by_name))})"
        )
    return by_name[class_name]


def model_dir(path: str | Path) -> Path:
    """The saved-model folder of `path`: path itself, or a run directory's `model/`.

    Args:
        path: a folder with config.json and safetensors weights, or a run directory.
    """
    path = Path(path)
    names = ("config.json", LORA_CONFIG)  # a model, or one model's adapters
    if not any((path / n).is_file() for n in names):
        path = path / "model" if any((path / "model" / n).is_file() for n in names) else path
    if not any((path / n).is_file() for n in names):
        raise FileNotFoundError(f"{path}: no config.json; pass a saved model or run directory")
    return path


def load_model(
    path: str | Path, torch_dtype: torch.dtype | str | None = None, kind: type | None = None
) -> T2IModel:
    """Load a saved t2i model of any family, by the `_class_name` of its config.json.

    Args:
        path: a saved model directory, or a run directory (its `model/` is loaded).
        torch_dtype: load the weights in this dtype (None: as saved).
        kind: the class (or base class) the model must be; another is a ValueError that
            names both, raised before the weights are read.
    """
    torch_dtype = resolve_dtype(torch_dtype)
    if is_adapter_dir(path):
        return _load_adapted(path, torch_dtype, kind)
    cls = class_of(path)
    if kind is not None and not issubclass(cls, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise ValueError(f"{path} holds a {cls.__name__}, not {article} {_kind_name(kind)}")
    return cls.from_pretrained(str(model_dir(path)), torch_dtype=torch_dtype)


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` (or a run directory's `model/`) holds one model's LoRA adapters alone,
    as a LoRA fine-tuning run saves them."""
    path = Path(path)
    return any(
        (p / LORA_CONFIG).is_file() and not (p / "config.json").is_file()
        for p in (path, path / "model")
    )


def _load_adapted(path: str | Path, torch_dtype: torch.dtype | None, kind: type | None) -> T2IModel:
    """One model's adapters on the base they name (`base_path`), unfused."""
    path = Path(path)
    folder = path if (path / LORA_CONFIG).is_file() else path / "model"
    config, weights = read_lora(folder)
    base = config.get("base_path")
    if "model" not in config["components"] or not base:
        raise ValueError(
            f"{folder}: adapters of a pipeline, not of one model; load its base "
            "pipeline and call load_lora_weights"
        )
    model = load_model(base, torch_dtype=torch_dtype, kind=kind)
    load_lora(model, config["components"]["model"], weights["model"], where=str(folder))
    model.lora_base_path = base
    return model


def _kind_name(kind: type) -> str:
    """A class's name, with its subclasses for an interface (ImageTokenizer)."""
    if inspect.isabstract(kind):
        subclasses = ", ".join(c.__name__ for c in MODELS.values() if issubclass(c, kind))
        return f"{kind.__name__} ({subclasses})"
    return kind.__name__


__all__ = [
    "CLIPModel",
    "CVAE",
    "CodeTransformer",
    "DALLEPrior",
    "DiffusionDecoder",
    "DiffusionPrior",
    "KLAutoencoder",
    "LatentAutoencoder",
    "LatentDenoiser",
    "MODELS",
    "MaskGITPrior",
    "PRESETS",
    "VAE",
    "VQVAE",
    "VQVAE2",
    "VQLatents",
    "VQModelTokenizer",
    "CategoricalVAE",
    "DiscreteVAE",
    "HierarchicalPixelCNN",
    "ImageTokenizer",
    "PixelCNN",
    "T2IModel",
    "READER_KINDS",
    "build_model",
    "resolve_dtype",
    "load_reader",
    "class_of",
    "load_model",
    "model_type",
    "model_dir",
    "clip_score",
    "rerank",
]
