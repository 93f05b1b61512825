"""Typed configs: dataclasses <-> YAML, `key=value` overrides, and errors that name the key.

A run is described by one YAML file with three sections::

    model:   {type: vae, latent_dim: 32, ...}   # `type` picks the class, the rest are its arguments
    data:    {...}                              # DataConfig
    train:   {...}                              # TrainConfig

`python -m t2i.train CONFIG train.max_steps=100 model.beta=4` overrides single keys; values
are parsed as YAML (`4` is an int, `1e-3` a float, `null` None, `[1, 2]` a list).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the file, the key and the fix."""


@dataclasses.dataclass
class DataConfig:
    """Where the images and captions come from.

    Args:
        dataset: "shapes" (the procedural shapes world) or "captioned" (a user's captioned
            images at `path`; setting `path` alone picks it).
        path: a captioned data set: an image folder with metadata.jsonl, a folder of images
            with same-name .txt captions, a .csv/.tsv/.parquet file, or a datasets folder.
        caption_column: the caption column of `path` (default: caption, text, ...).
        image_column: the image column of `path` (default: file_name, image, ...).
        random_crop: crop custom images at random offsets (else the centre).
        check_images: read every image of `path` once before training, so that all bad
            files are known (and reported) at the start; else they are found as read.
        image_size: side of the square images, in pixels.
        num_train: number of training samples.
        num_val: number of held-back samples used for sample grids and evaluation.
        heldout: for a captioned data set, a held-out split file (heldout.json: the sources
            it lists, relative to `path`, never train); "auto": `path`/heldout.json when the
            data set has one (the emoji corpus does), else `num_val` samples drawn with
            `seed`; null: always that draw.
        seed: data seed; the validation split uses seed + 1.
        num_objects: 1, 2, or None for a mix.
        holdout: attribute combinations kept out of training,
            e.g. [{color: purple, shape: triangle}].
        context_length: caption length in BPE tokens (open_clip's tokenizer).
        num_workers: DataLoader worker processes.
        tokenizer: a trained image tokenizer (saved model or run directory); when set, the
            samples are its code grids (`image_tokens`), encoded once and cached.
        token_cache: the folder of those cached code grids.
        clip: a trained CLIP model (saved model or run directory) whose frozen text tower
            gives a prior its caption states (`model.text_encoder: clip`).
        hard_negatives: for training CLIP: "relations" adds, for each caption that states a
            spatial relation, the caption with the opposite relation as a negative for its
            image (NegCLIP), so that CLIP learns what "left of" means; None: only the batch's
            other captions are negatives.
        autoencoder: a trained KL autoencoder (saved model or run directory); when set, a
            latent diffusion denoiser's samples are its scaled latents (`latents`), encoded
            once and cached in `token_cache`.
        caption_drop_prob: for models reading CLIP's caption states: the chance a training
            caption is replaced by the empty one (classifier-free guidance), in the
            training set itself; validation keeps every caption.
    """

    dataset: str = "shapes"
    path: str | None = None
    caption_column: str | None = None
    image_column: str | None = None
    random_crop: bool = False
    check_images: bool = True
    image_size: int = 32
    num_train: int = 50_000
    num_val: int = 512
    heldout: str | None = "auto"
    seed: int = 0
    num_objects: int | None = None
    holdout: list = dataclasses.field(default_factory=list)
    context_length: int = 32
    num_workers: int = 0
    tokenizer: str | None = None
    token_cache: str = "runs/token_cache"
    clip: str | None = None
    hard_negatives: str | None = None
    autoencoder: str | None = None
    caption_drop_prob: float = 0.0


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing for the one training loop.

    Args:
        output_dir: run directory: checkpoints/, samples/, logs/, model/ (the final weights).
        seed: seeds model init, data order and sampling noise.
        max_steps: number of optimizer updates.
        batch_size: per-device micro-batch size.
        gradient_accumulation_steps: micro-batches per optimizer update.
        learning_rate: peak learning rate, reached after `warmup_steps`.
        lr_schedule: a diffusers scheduler name: "cosine", "linear", "constant_with_warmup", ...
        warmup_steps: linear warmup length, in optimizer updates.
        weight_decay: AdamW weight decay.
        adam_betas: AdamW betas.
        max_grad_norm: gradient clipping norm; null turns clipping off.
        mixed_precision: "auto" (bf16 on CUDA, fp32 on CPU), "no" or "bf16".
        ema_decay: keep an exponential moving average of the weights with this decay; null = off.
        log_every: log metrics every this many updates.
        sample_every: write sample grids every this many updates (and at the end).
        num_samples: images per sample grid.
        checkpoint_every: write a resumable checkpoint every this many updates (and at the end).
        checkpoints_total_limit: keep only the newest this many checkpoints.
        max_nonfinite_steps: stop with an error after this many non-finite losses in a row.
        resume: "latest", a checkpoint directory, or null to start fresh.
        compile: run the model through `torch.compile` (inductor).
    """

    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.0
    adam_betas: list = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"
    ema_decay: float | None = None
    log_every: int = 10
    sample_every: int = 500
    num_samples: int = 16
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3
    max_nonfinite_steps: int = 10
    compile: bool = False
    resume: str | None = None


@dataclasses.dataclass
class ExperimentConfig:
    """One training run: which model, on which data, trained how.

    Args:
        model: `type` (a key of `t2i.models.MODELS`) and that class's constructor arguments;
            `type: pipeline` fine-tunes the `stages` of a saved pipeline instead.
        data: the data set.
        train: the training loop.
        init_from: start from saved weights: a saved model or run directory, or a saved
            pipeline (its component of the model's family; the architecture comes with the
            weights, so the model section's other keys are ignored). For `type: pipeline`,
            the pipeline to fine-tune (None: the default shipped with t2i).
    """

    model: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init_from: str | None = None


def _full_key(key: str, where: str) -> str:
    """A shorthand override key (`max_steps`) as its section's key (`train.max_steps`)."""
    if "." in key or key in ("init_from", "model", "data", "train"):
        return key
    sections = [
        f.name
        for f in dataclasses.fields(ExperimentConfig)
        if dataclasses.is_dataclass(f.default_factory)
        and key in {g.name for g in dataclasses.fields(f.default_factory)}
    ]
    if len(sections) != 1:
        raise ConfigError(
            f"{where}: override '{key}' names no single setting; write section.key "
            f"(e.g. train.{key})"
            if not sections
            else f"{where}: override '{key}' is in several sections ({', '.join(sections)}); "
            "write section.key"
        )
    return f"{sections[0]}.{key}"


def _unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    """The error for a key that the section does not have, with the closest valid keys."""
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'.{hint} Valid keys: {', '.join(valid)}.")


def _check_type(value: Any, hint: Any, key: str, where: str) -> Any:
    """Return `value` coerced to `hint` where that is lossless (int -> float), else raise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    base = origin or hint
    if base in (tuple, list, collections.abc.Sequence) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(set(args)) == 1:  # Sequence[int], tuple[int, ...]: each item checked
            value = [_check_type(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(value) if base is tuple else value
    if base is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except ValueError:
            pass
    elif (
        base not in (tuple, list, collections.abc.Sequence)  # a string is a sequence too
        and isinstance(value, base)
        and not (base is int and isinstance(value, bool))
    ):
        return value
    raise ConfigError(
        f"{where}: '{key}' must be {getattr(base, '__name__', base)}, got {value!r} "
        f"({type(value).__name__})."
    )


def from_dict(cls: type, data: dict, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, checking every key and type.

    Args:
        cls: a dataclass type.
        data: its fields as a dict (nested dataclasses as nested dicts).
        where: the source named in errors (a file path).
        prefix: dotted path of this section, for error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: section '{prefix or 'top level'}' must be a mapping.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(prefix + key, names, where)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value or {}, where, prefix + key + ".")
        else:
            kwargs[key] = _check_type(value, hint, prefix + key, where)
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """The plain-dict (YAML-ready) form of a config dataclass."""
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str], where: str = "command line") -> dict:
    """Set `section.key=value` overrides into a nested dict; values are parsed as YAML.

    Args:
        data: the nested config dict (changed in place and returned).
        overrides: strings like "train.max_steps=100"; a key that only one section has may
            go without it ("max_steps=100", "output_dir=runs/x").
        where: the source named in errors.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: override '{item}' is not of the form key=value.")
        key, raw = item.split("=", 1)
        key = _full_key(key.strip(), where)
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: '{key}' goes through a value that is not a section.")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"{where}: override '{item}': not a YAML value ({_yaml_problem(err)})"
            ) from None
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (1-based line and column)."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    if context is not None and getattr(err, "context", None):  # what was open, and where
        return f"{at(context)}: {err.context}: {problem} ({at(mark)})"
    return f"{at(mark)}: {problem}"


def read_text(path: str | Path) -> str:
    """A text file a user wrote (a config, captions, prompts, metadata) as UTF-8, a leading
    byte-order mark dropped (Windows editors write one; it would stay in the first caption
    or key); a ConfigError (a ValueError) naming the file and its first byte that is not
    UTF-8, rather than replacement characters in silence."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}, "
            f"line {line}); save it as UTF-8"
        ) from None


def config_model_type(path: str | Path) -> str | None:
    """A config file's `model.type` (None: unreadable, or none named), read without checking
    the rest (which command runs it: a recipe, fine-tuning, one model)."""
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except (OSError, yaml.YAMLError, ConfigError):
        return None
    return (data.get("model") or {}).get("type") if isinstance(data, dict) else None


def read_yaml(path: str | Path) -> dict:
    """A config file's contents; a ConfigError naming the file when it is missing or not a
    YAML mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a mapping of sections")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML, apply overrides, and validate it.

    Args:
        path: the YAML file.
        overrides: "section.key=value" strings applied after reading.
    """
    path = Path(path)
    data = read_yaml(path)
    apply_overrides(data, overrides or [])
    config = from_dict(ExperimentConfig, data, str(path))
    if "type" not in config.model:
        raise ConfigError(f"{path}: 'model.type' is required (the model family, e.g. vae).")
    check_ranges(config, str(path))
    return config


# the least value of each count of a run (a step count of 0 would divide by zero)
LEAST = {
    "train.max_steps": 0,  # 0: the initial weights saved as the model (an export)
    "train.batch_size": 1,
    "train.gradient_accumulation_steps": 1,
    "train.warmup_steps": 0,
    "train.log_every": 1,
    "train.sample_every": 1,
    "train.num_samples": 1,
    "train.checkpoint_every": 1,
    "train.checkpoints_total_limit": 1,
    "train.max_nonfinite_steps": 1,
    "data.image_size": 1,
    "data.num_train": 1,
    "data.num_val": 1,
    "data.context_length": 1,
    "data.num_workers": 0,
}


# diffusers' `get_scheduler` names (t2i.config imports no diffusers; a test keeps the two equal)
LR_SCHEDULES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "piecewise_constant",
)
SEED_MAX = 2**32 - 1  # numpy's and Accelerate's set_seed's bound


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def check_ranges(config: ExperimentConfig, where: str) -> None:
    """A ConfigError naming the first value out of its range: a count below its least
    value, a seed outside [0, 2**32 - 1], a rate, decay or probability that is not a finite
    number in its interval, a precision or schedule that is not one of the known names."""
    for key, least in LEAST.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value < least:
            raise ConfigError(f"{where}: {key}={value} must be >= {least}")
    train, data = config.train, config.data
    for key, value in (("train.seed", train.seed), ("data.seed", data.seed)):
        if not 0 <= value <= SEED_MAX:
            raise ConfigError(f"{where}: {key}={value} must be in [0, 2**32 - 1]")
    rules = [  # (key, value, ok, what it must be)
        ("train.learning_rate", train.learning_rate, lambda v: v > 0, "a finite number > 0"),
        ("train.weight_decay", train.weight_decay, lambda v: v >= 0, "a finite number >= 0"),
        ("train.max_grad_norm", train.max_grad_norm, lambda v: v > 0, "null or a number > 0"),
        ("train.ema_decay", train.ema_decay, lambda v: 0 <= v < 1, "null or in [0, 1)"),
        ("data.caption_drop_prob", data.caption_drop_prob, lambda v: 0 <= v < 1, "in [0, 1)"),
    ]
    for key, value, ok, must in rules:
        if value is None and must.startswith("null"):
            continue
        if not (_finite(value) and ok(value)):
            raise ConfigError(f"{where}: {key}={value} must be {must}")
    betas = train.adam_betas
    if not (len(betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{where}: train.adam_betas={betas} must be two numbers in [0, 1)")
    if train.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise ConfigError(
            f"{where}: train.mixed_precision={train.mixed_precision!r}: use 'auto', 'no', "
            "'bf16' or 'fp16'"
        )
    if train.lr_schedule not in LR_SCHEDULES:
        names = ", ".join(LR_SCHEDULES)
        raise ConfigError(f"{where}: train.lr_schedule={train.lr_schedule!r}: use one of {names}")


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write an experiment config as YAML (what a run was started with)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def checker(where: str) -> Any:
    """`check_kwargs` bound to a config's name: what `t2i.models.build_model` checks and
    coerces a model section with (YAML reads 3e-4 as a string).

    Args:
        where: the config's source and section, named in errors.
    """
    return lambda fn, kwargs: check_kwargs(fn, kwargs, where)


def check_kwargs(fn: Any, kwargs: dict, where: str) -> dict:
    """Check keyword arguments against a signature: every key known, every value of its type.

    Args:
        fn: a callable (a class's `__init__`) whose signature and annotations are the schema.
        kwargs: the arguments to check.
        where: the source and section named in errors, e.g. "configs/vae.yaml: model".

    Returns:
        the arguments, coerced where that is lossless ("3e-4" -> 3e-4 for a float, a list
        -> a tuple for a tuple).
    """
    params = inspect.signature(fn).parameters
    valid = [n for n, p in params.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    hints = typing.get_type_hints(fn)
    checked = {}
    for key, value in kwargs.items():
        if key not in valid:
            raise _unknown_key(key, valid, where)
        checked[key] = _check_type(value, hints[key], key, where) if key in hints else value
    return checked
