"""Components from outside t2i, read from local folders into the t2i model of their slot.

A user brings what they have, as diffusers and DALLE2-pytorch users do: a diffusers
`AutoencoderKL` folder (Stable Diffusion's layout; its `scaling_factor` and latent channels
from its config) becomes the latent route's autoencoder (`KLAutoencoder`), a diffusers
`UNet2DConditionModel` folder its denoiser (`LatentDenoiser` with that U-Net), a diffusers
`VQModel` folder (LDM's VQ autoencoders, aMUSEd's) the code routes' image tokenizer
(`VQModelTokenizer`), and a saved
t2i model, run or pipeline component is read as it is. What a folder's config holds that the
t2i model cannot express (another block type, a shift factor) is an error naming the key,
never weights silently dropped. Nothing is downloaded: a path that is not a folder is an
error.

`external_id` is the identity of what was given (a hash of its weight files), recorded in
the pipeline that uses it, so a build says where each part came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel

from t2i.models import MODELS, load_model
from t2i.models.autoencoder_kl import KLAutoencoder
from t2i.models.base import T2IModel, plain
from t2i.models.clip import CLIPModel
from t2i.models.latent_diffusion import LatentDenoiser
from t2i.models.vqmodel import VQModelTokenizer

KL_FIXED = {  # what KLAutoencoder builds, and a diffusers AutoencoderKL must have to fit it
    "in_channels": 3,
    "out_channels": 3,
    "act_fn": "silu",
    "shift_factor": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


def diffusers_class(path: str | Path) -> str | None:
    """The diffusers class a folder's config.json names (`_class_name`), or None (a t2i
    model names a t2i class; a folder without config.json names none)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    name = json.loads(config.read_text()).get("_class_name")
    return name if name in GIVEN else None


def external_id(path: str | Path) -> str:
    """The identity of a given folder or file: a hash of its safetensors files' bytes (16
    hex digits), subfolders included (a CLIP's text tower)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no safetensors weights")
    return files_id(files)


def files_id(files: list[Path]) -> str:
    """A hash of files' bytes, in the order given (16 hex digits)."""
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_autoencoder_kl(path: str | Path, image_size: int) -> KLAutoencoder:
    """A diffusers `AutoencoderKL` folder as t2i's KL autoencoder for `image_size` images.

    Raises:
        ValueError: a config key the KL autoencoder cannot express, named with its value, or
            an image size its downsampling cannot halve.
    """
    given = AutoencoderKL.from_pretrained(str(path), use_safetensors=True)
    config = dict(given.config)
    for key, want in KL_FIXED.items():
        if config.get(key, want) != want:
            raise ValueError(f"{path}: {key}={config[key]!r}; t2i's KL autoencoder has {want!r}")
    blocks = set(config["down_block_types"]) | set(config["up_block_types"])
    if blocks != {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
        raise ValueError(
            f"{path}: block types {sorted(blocks)}; t2i's KL autoencoder has "
            "DownEncoderBlock2D and UpDecoderBlock2D"
        )
    model = KLAutoencoder(
        image_size=image_size,
        latent_channels=config["latent_channels"],
        block_out_channels=list(config["block_out_channels"]),
        layers_per_block=config["layers_per_block"],
        norm_num_groups=config["norm_num_groups"],
        scaling_factor=config.get("scaling_factor"),
    )
    model.vae.load_state_dict(given.state_dict())
    return model


def load_unet(
    path: str | Path, latent_channels: int, latent_size: int, clip_width: int, **options: Any
) -> LatentDenoiser:
    """A diffusers `UNet2DConditionModel` folder as t2i's latent denoiser, reading latents of
    `latent_channels` x `latent_size`^2 and text states `clip_width` wide.

    Args:
        path: the U-Net's folder (config.json, safetensors weights).
        latent_channels: the autoencoder's latent channels.
        latent_size: the latent grid's side.
        clip_width: the CLIP's text width.
        **options: the denoiser's other settings (its noise schedule, prediction type, ...).

    Raises:
        ValueError: the U-Net does not fit those (`LatentDenoiser`'s check, naming the key).
    """
    given = UNet2DConditionModel.from_pretrained(str(path), use_safetensors=True)
    config = {k: v for k, v in dict(given.config).items() if not k.startswith("_")}
    model = LatentDenoiser(
        latent_channels=latent_channels,
        latent_size=latent_size,
        clip_width=clip_width,
        unet_config=plain(config),
        **options,
    )
    model.unet.load_state_dict(given.state_dict())
    return model


def load_given(
    path: str | Path,
    cls: type[T2IModel],
    image_size: int,
    clip: Any = None,
    autoencoder: Any = None,
    options: dict[str, Any] | None = None,
    slot: str | None = None,
) -> T2IModel:
    """A component given by a local path, as a t2i model of class `cls`, in float32.

    Args:
        path: a diffusers folder (`GIVEN`), a saved t2i model or run, a t2i pipeline (its
            component of class `cls`), or for a CLIP an open_clip checkpoint file.
        cls: the t2i class of the slot it fills.
        image_size: the images the pipeline draws (an autoencoder's).
        clip: the CLIP it reads (a given U-Net's text width).
        autoencoder: the autoencoder it reads (a given U-Net's latents).
        options: the slot's config keys (a denoiser's noise schedule; a CLIP's architecture).
        slot: the component it fills, taken first from a given pipeline.

    Raises:
        FileNotFoundError: no such path.
        ValueError: a folder of another kind than the slot, pickled weights, or a config
            the t2i model cannot express, named.
    """
    path, options = Path(path), dict(options or {})
    check_given_path(path)
    kind = diffusers_class(path)
    if kind is not None and not issubclass(GIVEN[kind], cls):
        raise ValueError(
            f"{path} holds a diffusers {kind}, which fills a {GIVEN[kind].__name__} "
            f"slot, not a {cls.__name__}"
        )
    if kind == "AutoencoderKL":  # (a slot of any latent autoencoder takes it)
        return load_autoencoder_kl(path, image_size)
    if kind == "VQModel":  # (a slot of any image tokenizer takes it)
        return VQModelTokenizer.from_diffusers(str(path), image_size)
    if kind == "UNet2DConditionModel":
        if clip is None or autoencoder is None:
            raise ValueError(f"{path}: a U-Net reads a CLIP and an autoencoder; give both")
        keys = (
            "num_train_timesteps",
            "beta_schedule",
            "beta_start",
            "beta_end",
            "prediction_type",
            "noise_offset",
            "snr_gamma",
        )
        schedule = {k: options[k] for k in keys if k in options}
        return load_unet(
            path,
            autoencoder.latent_channels,
            autoencoder.latent_size,
            clip.text_width,
            context_length=clip.config.context_length,
            **schedule,
        )
    if path.is_file():
        return _open_clip_file(path, cls, options)
    return load_model(component_of(path, cls, (slot,) if slot else ()), kind=cls).float()


def _open_clip_file(path: Path, cls: type[T2IModel], options: dict[str, Any]) -> T2IModel:
    """An open_clip checkpoint file of the architecture `options` names, as a CLIP."""
    if cls is not CLIPModel:
        raise ValueError(
            f"{path}: a checkpoint file fills a CLIP slot (open_clip), not a "
            f"{cls.__name__}; give a folder"
        )
    if not options.get("architecture"):
        raise ValueError(
            f"{path}: an open_clip checkpoint; name its architecture too (the recipe's "
            "clip.model.architecture=ViT-B-32, fine-tuning's clip.architecture=ViT-B-32)"
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: t2i reads safetensors checkpoints only (a pickle runs code)")
    return CLIPModel.from_open_clip(options["architecture"], pretrained=str(path))


def component_of(path: str | Path, cls: type[T2IModel], prefer: Sequence[str] = ()) -> Path:
    """The model `path` names: itself, or a saved pipeline's component of class `cls` (or a
    subclass): the first of `prefer` that is one, else the first in its model_index.json (a
    bundle holds two DALLEPriors, the prior and the unCLIP decoder).

    Raises:
        ValueError: a pipeline with no component of that class.
    """
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        return path
    entries = json.loads(index.read_text())
    fits = {model.__name__ for model in MODELS.values() if issubclass(model, cls)}
    names = [n for n, v in entries.items() if isinstance(v, list) and v[-1] in fits]
    names.sort(key=lambda n: list(prefer).index(n) if n in prefer else len(prefer))
    if not names:
        raise ValueError(f"{path}: a pipeline with no {cls.__name__} component")
    return path / names[0]


GIVEN: dict[str, type[T2IModel]] = {  # diffusers class -> the t2i model it becomes
    "AutoencoderKL": KLAutoencoder,
    "UNet2DConditionModel": LatentDenoiser,
    "VQModel": VQModelTokenizer,
}


def check_given_path(path: str | Path) -> None:
    """A FileNotFoundError for a given path that is not there, a ValueError for a folder of
    pickled weights only (`check_weights_only`), each starting with the path."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    check_weights_only(path)


def check_weights_only(path: str | Path) -> None:
    """A ValueError for a folder whose weights are pickled only (never loaded: a pickle runs
    code)."""
    path = Path(path)
    if path.is_dir() and not any(path.rglob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".ckpt")]
        if pickled:
            raise ValueError(
                f"{path}: weights in {pickled[0]} (pickle), which t2i never loads; convert them "
                "to safetensors"
            )


__all__ = [
    "GIVEN",
    "check_given_path",
    "check_weights_only",
    "diffusers_class",
    "external_id",
    "files_id",
    "component_of",
    "load_autoencoder_kl",
    "load_given",
    "load_unet",
]
