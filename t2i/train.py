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

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # a bad command line is refused before the heavy imports below
    from t2i.cli import precheck_train

    precheck_train(sys.argv[1:], __doc__)

import torch  # noqa: E402

from t2i.cli import train_parser  # noqa: E402
from t2i.config import (
    ConfigError,
    ExperimentConfig,
    checker,
    load_config,
    save_config,
)
from t2i.data.sets import bad_samples, build_datasets
from t2i.data.text import CaptionCollator
from t2i.evaluation import judge_many
from t2i.finetune import finetune_pipeline, given_overrides, is_finetune
from t2i.models import (
    MODELS,
    READER_KINDS,
    build_model,
    load_model,
    load_reader,
    model_dir,
)
from t2i.models.external import component_of
from t2i.models.lora import LoraError, LoraSpec, add_lora
from t2i.recipe import build_pipeline, is_recipe, load_recipe, preset_table
from t2i.runs import check_fresh, check_resume, clear_run
from t2i.training import Trainer, TrainResult, seed_everything
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
    lora = config.model.get("lora")
    if lora is not None:
        return adapted_model(config, where)
    try:
        if config.init_from is None:
            model = build_model(config.model, checker(f"model ({name})"))  # where: below
            model.load_pretrained_parts()
            return model
        if name not in MODELS:
            build_model({"type": name})  # raises the unknown-type error
        cls = MODELS[name]
        path = component_of(config.init_from, cls, COMPONENTS)  # (a pipeline: its first)
        model = load_model(path, kind=cls)
    except FileNotFoundError as err:
        raise ConfigError(f"{where}: init_from={config.init_from!r}: {err}") from err
    except ValueError as err:
        source = f"init_from={config.init_from!r}: " if config.init_from else ""
        raise ConfigError(f"{where}: {source}{err}") from err
    logger.info("starting from the weights in %s", path)
    return model.float().train()


def adapted_model(config: ExperimentConfig, where: str) -> torch.nn.Module:
    """The model `init_from` names, frozen, with the trainable LoRA adapters of `model.lora`
    (`t2i.models.lora`); what it saves is the adapters alone, naming that model as their base."""
    if config.init_from is None:
        raise ConfigError(f"{where}: model.lora adapts a trained model: set init_from too")
    try:
        spec = LoraSpec.from_dict(config.model["lora"], where)
    except LoraError as err:
        raise ConfigError(str(err)) from err
    plain = dataclasses.replace(
        config, model={k: v for k, v in config.model.items() if k != "lora"}
    )
    model = initial_model(plain, where)
    try:
        trainable = add_lora(model, spec)
    except LoraError as err:
        raise ConfigError(f"{where}: {err}") from err
    base = component_of(config.init_from, type(model), COMPONENTS)
    model.lora_base_path = str(model_dir(base).resolve())
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA rank %d: %d of %d parameters train", spec.rank, trainable, total)
    return model


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
    """The caption collator with open_clip's BPE (`caption_collator` gives the one training
    uses), after checking the model reads captions as the data tokenises them and reads the
    hard negatives asked for."""
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


def caption_collator(
    checked: CaptionCollator, model: torch.nn.Module, readers: dict[str, Any]
) -> CaptionCollator:
    """The collator training uses: captions tokenised by the text tower that reads them (the
    model's own CLIP, else the CLIP preparing its caption states), else by open_clip's BPE.

    Args:
        checked: `check_text`'s collator.
        model: the model to train.
        readers: its readers (`load_readers`).
    """
    if hasattr(model, "tokenize"):  # a CLIP: its own text tower
        checked.tokenizer = model.tokenizer
    elif model.reads & {"text_states", "text_embeds"}:
        checked.tokenizer = readers["clip"].tokenizer
    return checked


def check_batch(images: Any, config: ExperimentConfig, where: str) -> None:
    """A ConfigError when the training set holds fewer samples than one batch (before its
    images are encoded or a step is run)."""
    size = len(images) if hasattr(images, "__len__") else None  # a stream has no length
    if size is not None and size < config.train.batch_size:
        source = config.data.path or config.data.dataset
        raise ConfigError(
            f"{where}: {source}: {size} training samples, fewer than one batch "
            f"(train.batch_size={config.train.batch_size}); lower train.batch_size or add images"
        )


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
    check_batch(images, config, where)
    readers = load_readers(config, model, where)
    collate = caption_collator(collate, model, readers)
    sources = {key: str(model_dir(getattr(config.data, key)).resolve()) for key in readers}
    data = prepare(
        model.reads,
        images,
        val_set,
        config.data.token_cache,
        sources=sources,
        caption_drop_prob=config.data.caption_drop_prob,
        seed=config.train.seed,
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
            overrides = args.overrides
            if is_finetune(args.config):  # COMPONENT.pretrained=PATH, COMPONENT.freeze=BOOL
                overrides = given_overrides(overrides)
            config = load_config(args.config, overrides)
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
