"""Train any t2i model: `python -m t2i.train CONFIG [section.key=value ...]`.

Also runs under `accelerate launch -m t2i.train CONFIG` for several GPUs. The run directory
(`train.output_dir`) receives config.yaml, logs/metrics.csv, samples/*.png,
checkpoints/checkpoint-N/ and, at the end, model/ (load it with `from_pretrained`).
A config with `model.type: pipeline` fine-tunes a saved pipeline's stages (`t2i.finetune`);
one with `model.type: recipe` trains a whole pipeline from scratch (`t2i.recipe`).

Examples:
    python -m t2i.train configs/shapes/vae.yaml
    python -m t2i.train configs/shapes/beta_vae.yaml model.beta=64 train.output_dir=runs/b64
    python -m t2i.train configs/shapes/vae.yaml train.resume=latest
    python -m t2i.train configs/custom/pipeline.yaml data.path=DIR image_size=64 output_dir=OUT
    python -m t2i.train configs/custom/pipeline.yaml --preset       # the resolution presets
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # a bad command line is refused before the heavy imports below
    from t2i.cli import precheck_train

    precheck_train(sys.argv[1:], __doc__)

import torch  # noqa: E402
import yaml  # noqa: E402

from t2i.cli import train_parser  # noqa: E402
from t2i.config import (
    ConfigError,
    ExperimentConfig,
    checker,
    load_config,
    save_config,
    to_dict,
)
from t2i.data.sets import bad_samples, build_datasets
from t2i.data.text import CaptionCollator
from t2i.evaluation import judge_many
from t2i.finetune import finetune_pipeline
from t2i.models import (
    MODELS,
    READER_KINDS,
    build_model,
    load_model,
    load_reader,
    model_dir,
)
from t2i.recipe import build_pipeline, is_recipe, load_recipe, preset_table
from t2i.training import Trainer, TrainResult, list_checkpoints, seed_everything
from t2i.training.inputs import (
    check_readers,
    needs,
    prepare,
    reads_caption,
    samples_are_judged,
)
from t2i.training.stages import COMPONENTS

logger = logging.getLogger("t2i.train")


def initial_model(config: ExperimentConfig, where: str) -> torch.nn.Module:
    """The model to train: new from the model section, or the saved one `init_from` names
    (a model or run directory, or a pipeline's first component of the model's class), in
    float32.

    Args:
        config: the experiment config.
        where: the config's source, named in errors.
    """
    name = config.model.get("type")
    try:
        if config.init_from is None:
            return build_model(config.model, checker(f"{where}: model ({name})"))
        if name not in MODELS:
            build_model({"type": name})  # raises the unknown-type error
        cls, path = MODELS[name], Path(config.init_from)
        if (path / "model_index.json").is_file():
            index = json.loads((path / "model_index.json").read_text())
            names = [c for c in COMPONENTS if (index.get(c) or [None, None])[1] == cls.__name__]
            path = path / (names[0] if names else COMPONENTS[0])
        model = load_model(path, kind=cls)
    except FileNotFoundError as err:
        raise ConfigError(f"{where}: init_from={config.init_from!r}: {err}") from err
    except ValueError as err:
        source = f"init_from={config.init_from!r}: " if config.init_from else ""
        raise ConfigError(f"{where}: {source}{err}") from err
    logger.info("starting from the weights in %s", path)
    return model.float().train()


def load_readers(config: ExperimentConfig, model: torch.nn.Module, where: str) -> dict:
    """The frozen models preparing what `model` reads (data key -> model), checked against it
    and against the data's image size."""
    loaded = {}
    for key in needs(model.reads):
        path = getattr(config.data, key)
        if not path:
            raise ConfigError(
                f"{where}: {type(model).__name__} reads {key} outputs and needs data.{key} "
                f"(a trained {READER_KINDS[key].__name__} run)"
            )
        try:
            loaded[key] = load_reader(key, path)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"{where}: data.{key}={path!r}: {err}") from err
    for key in ("tokenizer", "autoencoder"):  # they encode the data's images
        size = loaded[key].image_size if key in loaded else config.data.image_size
        if size != config.data.image_size:
            raise ConfigError(
                f"{where}: data.image_size={config.data.image_size} but the {key} was trained "
                f"on {size} pixel images"
            )
    try:
        check_readers(model.config, model.reads, **loaded)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    return loaded


def check_schedule(config: ExperimentConfig, where: str) -> None:
    """Warn when the warmup is longer than the run: the learning rate never reaches its peak."""
    train = config.train
    if train.warmup_steps > train.max_steps:
        logger.warning(
            "%s: train.warmup_steps=%d > train.max_steps=%d: the learning rate ends at %.0f%% "
            "of train.learning_rate=%g and never reaches it; lower train.warmup_steps",
            where,
            train.warmup_steps,
            train.max_steps,
            100 * train.max_steps / train.warmup_steps,
            train.learning_rate,
        )


def check_text(config: ExperimentConfig, model: torch.nn.Module, where: str) -> CaptionCollator:
    """The caption collator, after checking the model reads captions as the data tokenises
    them and reads the hard negatives asked for."""
    context = model.config.get("context_length")
    if context is not None and reads_caption(model.reads) and context != config.data.context_length:
        raise ConfigError(
            f"{where}: model.context_length={context} but data.context_length="
            f"{config.data.context_length}; captions must be tokenised to the model's length"
        )
    hard = config.data.hard_negatives
    if hard is not None and "negative_input_ids" not in model.reads:
        raise ConfigError(
            f"{where}: data.hard_negatives={hard!r}: only CLIP reads hard negatives, "
            f"not model.type={config.model['type']!r}"
        )
    try:
        return CaptionCollator(config.data.context_length, hard)
    except ValueError as err:
        raise ConfigError(f"{where}: data.{err}") from err


def judge_samples(images: torch.Tensor, batch: dict) -> dict[str, float]:
    """The shapes judge's prompt fidelity of sampled images on their captions' specs."""
    return {"fidelity": judge_many(images.float().cpu(), batch["spec"])["fidelity"]}


def run(config: ExperimentConfig, where: str = "config") -> TrainResult:
    """Build the model and data a config names and train it; return the result.

    Args:
        config: the experiment config (one model; `model.type: pipeline` is `t2i.finetune`'s).
        where: the config's source, named in errors.
    """
    check_fresh(config, where)
    check_resume(config, where)
    check_schedule(config, where)
    seed_everything(config.train.seed)
    model = initial_model(config, where)
    collate = check_text(config, model, where)
    try:
        # a model of images alone (a tokenizer, an autoencoder) trains on uncaptioned images;
        # the others read captions, or a token cache that keeps them for the priors
        alone = model.reads <= {"pixel_values"}
        images, val_set = build_datasets(config.data, captions=not alone)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    readers = load_readers(config, model, where)
    sources = {key: str(model_dir(getattr(config.data, key)).resolve()) for key in readers}
    data = prepare(
        model.reads,
        images,
        val_set,
        config.data.token_cache,
        sources=sources,
        caption_drop_prob=config.data.caption_drop_prob,
        **readers,
    )
    judged = getattr(images, "has_spec", False)  # the samples carry shapes specs
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    trainer = Trainer(
        model,
        config.train,
        data.train_set,
        collate_fn=collate,
        sample_dataset=data.val_set,
        num_workers=config.data.num_workers,
        decode_tokens=data.decode_tokens,
        batch_transform=data.batch_transform,
        score_samples=judge_samples if judged and samples_are_judged(model.reads) else None,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("training %s (%.2fM parameters) into %s", config.model["type"], n_params / 1e6, out)
    result = trainer.train()
    report = bad_samples(images)
    if report.get("count"):
        logger.warning(
            "skipped %d bad samples of %s: %s",
            report["count"],
            config.data.path,
            ", ".join(f"{k} ({v})" for k, v in report["bad"].items()),
        )
    return result


# train keys a resumed run may change (how long it runs, how it logs); any other key of the
# config the run recorded must stay as it was, or the run would resume as another model
RESUMABLE = frozenset({"data.num_workers"}) | frozenset(
    f"train.{k}"
    for k in (
        "max_steps",
        "resume",
        "output_dir",
        "log_every",
        "sample_every",
        "num_samples",
        "checkpoint_every",
        "checkpoints_total_limit",
    )
)
RUN_PARTS = ("config.yaml", "logs", "samples", "checkpoints", "model", "validation.json")


def check_resume(config: ExperimentConfig, where: str) -> None:
    """A ConfigError when `train.resume` continues a run that was trained with another config
    (a key other than those of RESUMABLE changed), naming the first such key."""
    recorded = Path(config.train.output_dir) / "config.yaml"
    if config.train.resume is None or not recorded.is_file():
        return
    old = _flat(yaml.safe_load(recorded.read_text()) or {})
    new = _flat(to_dict(config))
    changed = [k for k in new if k in old and k not in RESUMABLE and old[k] != new[k]]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{where}: train.resume={config.train.resume}: {recorded.parent} was trained with "
            f"{key}={old[key]!r}, not {new[key]!r}; resume it with its own config "
            f"({recorded}), or choose another train.output_dir"
        )


def _flat(tree: dict) -> dict[str, Any]:
    """{"model": {"dim": 8}} -> {"model.dim": 8}; a top-level value keeps its name."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def clear_run(config: ExperimentConfig, where: str) -> None:
    """`--overwrite`: remove the run `train.output_dir` holds (what a run writes: RUN_PARTS),
    leaving anything else in the folder; on the first process of a launch only."""
    if config.train.resume is not None:
        raise ConfigError(f"{where}: --overwrite starts afresh; it cannot go with train.resume")
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out = Path(config.train.output_dir)
    for name in RUN_PARTS:
        part = out / name
        if part.is_dir():
            shutil.rmtree(part)
        elif part.exists():
            part.unlink()


def check_fresh(config: ExperimentConfig, where: str) -> None:
    """A ConfigError when `train.output_dir` already holds a run and `train.resume` is unset:
    training afresh there would overwrite its checkpoints, logs and model. Only what a run
    writes after its first steps counts (not the folders every process of a distributed
    launch makes at its start), so the processes of one launch never see each other's."""
    out = Path(config.train.output_dir)
    if config.train.resume is not None or not out.is_dir():
        return
    written = (out / "model", out / "logs" / "metrics.csv")
    held = list_checkpoints(out) or [p for p in written if p.exists()]
    if held:
        raise ConfigError(
            f"{where}: train.output_dir={str(out)!r} already holds a run ({held[-1].name}); "
            "continue it with --resume latest, or choose another train.output_dir"
        )


def train(config: ExperimentConfig, where: str = "config") -> TrainResult:
    """Train what a config names: one model (`run`), or a pipeline's stages (fine-tuning)."""
    if config.model.get("type") == "pipeline":
        return finetune_pipeline(config, where, run)
    return run(config, where)


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m t2i.train CONFIG [section.key=value ...]`."""
    parser = train_parser(__doc__)
    args = parser.parse_intermixed_args(argv)  # the flag may come before the overrides
    if args.resume is not None:
        args.overrides.append(f"train.resume={args.resume}")
    if args.preset is not None and not is_recipe(args.config):
        print(
            f"error: --preset: {args.config} is not a recipe (model.type: recipe)", file=sys.stderr
        )
        return 2
    if args.preset == "":
        print(preset_table(args.config))
        return 0
    if args.preset is not None:
        args.overrides.append(f"model.preset={args.preset}")
    rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch and torchrun
    level = logging.INFO if rank == 0 else logging.WARNING  # progress lines once, not per process
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    try:
        if is_recipe(args.config):
            result = build_pipeline(load_recipe(args.config, args.overrides), run)
        else:
            config = load_config(args.config, args.overrides)
            if args.overwrite:
                clear_run(config, args.config)
            result = train(config, args.config)
    except (ConfigError, FileNotFoundError) as err:  # a bad config, or a missing checkpoint
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info(
        "done: %d steps, final loss %.4f; model in %s",
        result.step,
        result.metrics.get("loss", float("nan")),
        result.model_dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
