"""Train any t2i model: `python -m t2i.train CONFIG [section.key=value ...]`.

Also runs under `accelerate launch -m t2i.train CONFIG` for several GPUs. The run directory
(`train.output_dir`) receives config.yaml, logs/metrics.csv, samples/*.png,
checkpoints/checkpoint-N/ and, at the end, model/ (load it with `from_pretrained`).

Examples:
    python -m t2i.train configs/shapes/vae.yaml
    python -m t2i.train configs/shapes/beta_vae.yaml model.beta=64 train.output_dir=runs/b64
    python -m t2i.train configs/shapes/vae.yaml train.resume=latest
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from t2i.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    check_kwargs,
    load_config,
    save_config,
)
from t2i.data.captioned import CaptionedDataset, WebDatasetShards, detect_format
from t2i.data.shapes import ShapesDataset
from t2i.data.text import CaptionCollator
from t2i.data.tokens import (
    TokenDataset,
    cached_tokens,
    encode_dataset,
    fingerprint,
    model_description,
)
from t2i.evaluation import judge_many
from t2i.models import (
    MODELS,
    CLIPModel,
    DALLEPrior,
    DiffusionDecoder,
    DiffusionPrior,
    ImageTokenizer,
    load_model,
    model_dir,
)
from t2i.training import Trainer, TrainResult, seed_everything

logger = logging.getLogger("t2i.train")


def build_model(config: ExperimentConfig, where: str) -> torch.nn.Module:
    """Instantiate `config.model["type"]` with the rest of the section as its arguments.

    Args:
        config: the experiment config.
        where: the config's source, named in errors.
    """
    kwargs = dict(config.model)
    name = kwargs.pop("type")
    if name not in MODELS:
        raise ConfigError(
            f"{where}: model.type={name!r} is not a t2i model; "
            f"choose one of: {', '.join(sorted(MODELS))}."
        )
    cls = MODELS[name]
    return cls(**check_kwargs(cls.__init__, kwargs, f"{where}: model ({name})"))


COMPONENTS: dict[str, type] = {  # a pipeline's components by the model families they hold,
    "image_tokenizer": ImageTokenizer,  # in the order they train (each reads those before it)
    "clip": CLIPModel,
    "prior": DALLEPrior,
    "diffusion_prior": DiffusionPrior,  # the unCLIP route's, when a pipeline has it
    "decoder": (DALLEPrior, DiffusionDecoder),  # over codes, or pixels
}


def initial_model(config: ExperimentConfig, where: str) -> torch.nn.Module:
    """The model to train: new from the model section, or the saved one `init_from` names
    (a model or run directory, or a pipeline's component of the model's family), in float32.

    Args:
        config: the experiment config.
        where: the config's source, named in errors.
    """
    if config.init_from is None:
        return build_model(config, where)
    name = config.model["type"]
    if name not in MODELS:
        raise ConfigError(f"{where}: model.type={name!r} is not a t2i model")
    cls, path = MODELS[name], Path(config.init_from)
    if (path / "model_index.json").is_file():
        path = path / next(c for c, kind in COMPONENTS.items() if issubclass(cls, kind))
    try:
        model = load_model(path)
    except (FileNotFoundError, ValueError, StopIteration) as err:
        raise ConfigError(f"{where}: init_from={config.init_from!r}: {err}") from err
    if not isinstance(model, cls):
        raise ConfigError(
            f"{where}: init_from={config.init_from!r} holds a {type(model).__name__}, "
            f"not the {cls.__name__} that model.type={name!r} trains"
        )
    logger.info("starting from the weights in %s", path)
    return model.float().train()


def finetune_pipeline(config: ExperimentConfig, where: str) -> TrainResult:
    """Fine-tune the `model.stages` of a saved pipeline, in pipeline order, each stage
    reading the stages before it as they now are, and save the new pipeline to
    `train.output_dir` (the stages' runs go to its runs/ folder).

    Args:
        config: the experiment config (`model: {type: pipeline, stages: [...]}`).
        where: the config's source, named in errors.
    """
    from t2i.pipelines import (
        DEFAULT_PIPELINE,
        TextToImagePipeline,
        check_pipeline_dir,
        saved_components,
    )

    stages = config.model.get("stages") or ["prior"]
    unknown = [s for s in stages if s not in COMPONENTS]
    if unknown or set(config.model) - {"type", "stages"}:
        raise ConfigError(
            f"{where}: model.type=pipeline takes only model.stages, a list of "
            f"{', '.join(COMPONENTS)} (got {unknown or sorted(config.model)})"
        )
    source = Path(config.init_from) if config.init_from else DEFAULT_PIPELINE
    try:
        index = check_pipeline_dir(source)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: init_from={str(source)!r}: {err}") from err
    out = Path(config.train.output_dir)
    has = saved_components(index)
    current = {name: source / name for name in COMPONENTS if name in has}  # in training order
    missing = [s for s in stages if s not in current]
    if missing:
        raise ConfigError(
            f"{where}: model.stages names {', '.join(missing)}, which the pipeline at "
            f"{str(source)!r} does not have (it has {', '.join(current)})"
        )
    result = None
    for stage in (s for s in COMPONENTS if s in stages):
        result = run(stage_config(config, stage, current, out), f"{where} [{stage}]")
        current[stage] = result.model_dir
    parts = {name: load_model(path).eval() for name, path in current.items()}
    pipe = TextToImagePipeline(**parts)
    pipe.sampling_defaults.update(index.get("_t2i_sampling") or {})  # the source's measured
    pipe.save_pretrained(out)
    logger.info("fine-tuned pipeline (%s) saved to %s", ", ".join(stages), out)
    return dataclasses.replace(result, model_dir=out)


def stage_config(
    config: ExperimentConfig, stage: str, current: dict[str, Path], out: Path
) -> ExperimentConfig:
    """One fine-tuning stage's config: the component as the model, the data at the sizes of
    the pipeline's tokenizer and CLIP, the stage's run folder."""
    tokenizer, clip = load_model(current["image_tokenizer"]), load_model(current["clip"])
    kind = type(load_model(current[stage]))
    data = dataclasses.replace(
        config.data,
        image_size=tokenizer.config.image_size if stage != "clip" else config.data.image_size,
        context_length=clip.config.context_length,
        tokenizer=str(current["image_tokenizer"]) if stage in ("prior", "decoder") else None,
        clip=str(current["clip"]) if stage not in ("image_tokenizer", "clip") else None,
    )
    return dataclasses.replace(
        config,
        model={"type": next(k for k, v in MODELS.items() if v is kind)},
        data=data,
        train=dataclasses.replace(config.train, output_dir=str(out / "runs" / stage)),
        init_from=str(current[stage]),
    )


def build_datasets(data: DataConfig, where: str) -> tuple[Dataset, Dataset]:
    """The training set and a disjoint validation set, for grids and evaluation: the shapes
    world (validation: data seed + 1) or a seeded split of a captioned data set.

    Args:
        data: the data section.
        where: the config's source, named in errors.
    """
    if data.path is not None or data.dataset == "captioned":
        return captioned_datasets(data, where)
    if data.dataset != "shapes":
        raise ConfigError(
            f"{where}: data.dataset={data.dataset!r} is not known; use 'shapes', or set "
            "data.path to a captioned data set"
        )
    common = dict(
        size=data.image_size,
        num_objects=data.num_objects,
        holdout=data.holdout or None,
        split="train",
    )
    return (
        ShapesDataset(n=data.num_train, seed=data.seed, **common),
        ShapesDataset(n=data.num_val, seed=data.seed + 1, **common),
    )


def captioned_datasets(data: DataConfig, where: str) -> tuple[Dataset, Dataset]:
    """A user's captioned data set at `data.path`, split into training and validation."""
    if not data.path:
        raise ConfigError(f"{where}: data.dataset=captioned needs data.path")
    try:
        if detect_format(data.path) == "webdataset":
            stream = WebDatasetShards(
                data.path, data.image_size, data.caption_column, data.random_crop, seed=data.seed
            )
            return stream.split(data.num_val)
        full = CaptionedDataset(
            data.path, data.image_size, data.caption_column, data.image_column, data.random_crop
        )
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: data.path={data.path!r}: {err}") from err
    if data.check_images:
        report = full.check_all()
        if report["count"]:
            logger.warning(
                "%s: %d bad samples will be skipped (listed at the end)", data.path, report["count"]
            )
    train_set, val_set = full.split(data.num_val, data.seed)
    logger.info(
        "%s: %d training and %d validation samples (%s)",
        data.path,
        len(train_set),
        len(val_set),
        full.format,
    )
    return train_set, val_set


def load_tokenizer(data: DataConfig, where: str) -> ImageTokenizer:
    """The trained tokenizer that `data.tokenizer` names, in eval mode, checked against the data.

    Args:
        data: the data section.
        where: the config's source, named in errors.
    """
    try:
        tokenizer = load_model(data.tokenizer)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: data.tokenizer={data.tokenizer!r}: {err}") from err
    if not isinstance(tokenizer, ImageTokenizer):
        raise ConfigError(
            f"{where}: data.tokenizer={data.tokenizer!r} is a {type(tokenizer).__name__}, "
            f"not an image tokenizer (DiscreteVAE, VQVAE, VQVAE2)"
        )
    if tokenizer.config.image_size != data.image_size:
        raise ConfigError(
            f"{where}: data.image_size={data.image_size} but the tokenizer was trained on "
            f"{tokenizer.config.image_size} pixel images"
        )
    return tokenizer.eval().requires_grad_(False)


def check_prior(model: torch.nn.Module, tokenizer: ImageTokenizer, where: str) -> None:
    """A prior's codebook size and grid must be its tokenizer's; name both when they differ."""
    grid_key = "grid_sizes" if "grid_sizes" in model.config else "grid_size"
    expected = {"num_tokens": tokenizer.num_tokens, grid_key: tokenizer.grid_size}
    for key, value in expected.items():
        have = model.config.get(key)
        if have is not None and list(_as_tuple(have)) != list(_as_tuple(value)):
            raise ConfigError(
                f"{where}: model.{key}={have} but the tokenizer {type(tokenizer).__name__} "
                f"has {key}={value}; set model.{key}={value}"
            )


def _as_tuple(value: object) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def token_dataset(
    tokenizer: ImageTokenizer,
    dataset: ShapesDataset,
    data: DataConfig,
    clip: CLIPModel | None = None,
) -> TokenDataset:
    """A data set's code grids under `tokenizer`, from the cache (encoded on a miss).

    Args:
        tokenizer: the trained tokenizer.
        dataset: the image data set.
        data: the data section (the tokenizer path and the cache folder).
        clip: also keep each image's CLIP embedding (`image_embeds`: unCLIP's decoder).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = list(tokenizer.state_dict().items())
    described = [model_description(tokenizer), dataset.description]
    source = f"{model_dir(data.tokenizer).resolve()} {dataset.description}"
    extras = None
    if clip is not None:
        weights += [(f"clip.{k}", v) for k, v in clip.state_dict().items()]
        described.append(model_description(clip))
        source += f" + {model_dir(data.clip).resolve()}"
        extras = {"image_embeds": clip_image_embeds(clip)}

    def build():
        for model in (tokenizer, clip):
            if model is not None:
                model.to(device)
        return encode_dataset(dataset, tokenizer.encode, device=device, extras=extras)

    key = fingerprint(weights, *described)
    return TokenDataset(cached_tokens(data.token_cache, key, source, build))


def embedding_dataset(clip: CLIPModel, dataset: ShapesDataset, data: DataConfig) -> TokenDataset:
    """A data set's CLIP image embeddings (`image_embeds`) beside its captions, from the cache
    (encoded on a miss), so the diffusion prior never runs CLIP's image tower. The caption's
    side (token states and text embedding) comes from one text-tower pass per batch
    (`clip_text_states(clip, embeds=True)`).

    Args:
        clip: the trained CLIP model.
        dataset: the image data set.
        data: the data section (the CLIP path and the cache folder).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    key = fingerprint(
        clip.state_dict().items(), model_description(clip), dataset.description, "embeds"
    )
    source = f"{model_dir(data.clip).resolve()} {dataset.description} embeddings"

    extras = {"image_embeds": clip_image_embeds(clip)}

    def build():
        clip.to(device)
        return encode_dataset(dataset, None, device=device, extras=extras)

    return TokenDataset(cached_tokens(data.token_cache, key, source, build))


def clip_reads(model: torch.nn.Module) -> tuple[bool, bool]:
    """Whether a model reads CLIP's caption token states, and CLIP's embeddings."""
    if isinstance(model, DiffusionPrior):
        return True, True
    if isinstance(model, DiffusionDecoder):
        return False, True
    mode = model.config.get("text_encoder")
    return mode == "clip", mode == "clip_image"


def load_clip(data: DataConfig, model: torch.nn.Module, where: str) -> CLIPModel:
    """The frozen CLIP model that `data.clip` names, checked against the model reading it.

    Args:
        data: the data section.
        model: the prior or decoder (its `clip_width`, `context_length`, `embed_dim`).
        where: the config's source, named in errors.
    """
    if not data.clip:
        raise ConfigError(
            f"{where}: {type(model).__name__} reads CLIP and needs data.clip (a trained CLIP run)"
        )
    try:
        clip = load_model(data.clip)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: data.clip={data.clip!r}: {err}") from err
    if not isinstance(clip, CLIPModel):
        raise ConfigError(f"{where}: data.clip={data.clip!r} is a {type(clip).__name__}, not CLIP")
    states, embeds = clip_reads(model)
    checks = [
        ("clip_width", clip.config.text_width),
        ("context_length", clip.config.context_length),
    ]
    checks = (checks if states else []) + ([("embed_dim", clip.config.embed_dim)] if embeds else [])
    for key, have in checks:
        if model.config[key] != have:
            raise ConfigError(
                f"{where}: model.{key}={model.config[key]} but the CLIP model at "
                f"data.clip has {have}; set model.{key}={have}"
            )
    return clip.eval().requires_grad_(False)


def clip_text_states(clip: CLIPModel, embeds: bool = False):
    """A batch transform adding the frozen CLIP token states (`text_states`) of `input_ids`,
    and with `embeds` their pooled text embeddings (`text_embeds`) from the same pass."""

    def transform(batch: dict) -> dict:
        clip.to(batch["input_ids"].device)
        features = clip.text_features(batch["input_ids"])
        out = {**batch, "text_states": features.states}
        if embeds:
            out["text_embeds"] = features.embeds
        return out

    return transform


def clip_image_embeds(clip: CLIPModel):
    """batch -> the frozen CLIP image embeddings of its `pixel_values` (on their device): the
    unCLIP stages' `image_embeds`, cached for the diffusion prior and the decoder over codes,
    computed per batch for the pixel decoder."""

    def embed(batch: dict) -> torch.Tensor:
        clip.to(batch["pixel_values"].device)
        return clip.encode_image(batch["pixel_values"])

    return embed


def judge_samples(images: torch.Tensor, batch: dict) -> dict[str, float]:
    """The shapes judge's prompt fidelity of sampled images on their captions' specs."""
    return {"fidelity": judge_many(images.float().cpu(), batch["spec"])["fidelity"]}


def token_decoder(tokenizer: ImageTokenizer):
    """Code grids (on any device) -> images, for the trainer's sample grids."""

    def decode(tokens: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        device = (tokens[0] if isinstance(tokens, tuple) else tokens).device
        return tokenizer.to(device).decode(tokens)

    return decode


def run(config: ExperimentConfig, where: str = "config") -> TrainResult:
    """Build the model and data a config names and train it; return the result.

    Args:
        config: the experiment config.
        where: the config's source, named in errors.
    """
    if config.model.get("type") == "pipeline":
        return finetune_pipeline(config, where)
    seed_everything(config.train.seed)
    model = initial_model(config, where)
    reads_states, reads_embeds = clip_reads(model)
    context = model.config.get("context_length")
    captioned = model.config.get("text_encoder") != "clip_image"  # a decoder reads no caption
    if context is not None and captioned and context != config.data.context_length:
        raise ConfigError(
            f"{where}: model.context_length={context} but data.context_length="
            f"{config.data.context_length}; captions must be tokenised to the model's length"
        )
    hard = config.data.hard_negatives
    if hard is not None and not isinstance(model, CLIPModel):
        raise ConfigError(
            f"{where}: data.hard_negatives={hard!r}: only CLIP reads hard negatives, "
            f"not model.type={config.model['type']!r}"
        )
    try:
        collate = CaptionCollator(config.data.context_length, hard)
    except ValueError as err:
        raise ConfigError(f"{where}: data.{err}") from err
    train_set, val_set = build_datasets(config.data, where)
    images = train_set  # what reports bad files, when it is a captioned data set
    decode_tokens = batch_transform = score = None
    clip = load_clip(config.data, model, where) if reads_states or reads_embeds else None
    if reads_states:
        batch_transform = clip_text_states(clip, embeds=isinstance(model, DiffusionPrior))
    judged = getattr(images, "has_spec", isinstance(images, ShapesDataset))  # shapes specs
    if isinstance(model, DiffusionPrior):  # trains on cached embedding pairs
        train_set = embedding_dataset(clip, train_set, config.data)
        val_set = embedding_dataset(clip, val_set, config.data)
    elif isinstance(model, DiffusionDecoder):  # trains on images and their CLIP embeddings
        embed = clip_image_embeds(clip)

        def batch_transform(batch: dict) -> dict:
            return {**batch, "image_embeds": embed(batch)}

        score = judge_samples if judged else None  # does a draw show the embedded image?
    elif config.data.tokenizer:
        tokenizer = load_tokenizer(config.data, where)
        check_prior(model, tokenizer, where)
        embeds = clip if reads_embeds else None
        train_set = token_dataset(tokenizer, train_set, config.data, embeds)
        val_set = token_dataset(tokenizer, val_set, config.data, embeds)
        decode_tokens = token_decoder(tokenizer)
        if judged and model.config.get("context_length"):
            score = judge_samples  # a caption-conditioned prior: is it drawing the captions?
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    trainer = Trainer(
        model,
        config.train,
        train_set,
        collate_fn=collate,
        sample_dataset=val_set,
        num_workers=config.data.num_workers,
        decode_tokens=decode_tokens,
        batch_transform=batch_transform,
        score_samples=score,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("training %s (%.2fM parameters) into %s", config.model["type"], n_params / 1e6, out)
    result = trainer.train()
    report = images.report() if isinstance(images, (CaptionedDataset, WebDatasetShards)) else {}
    if report.get("count"):
        logger.warning(
            "skipped %d bad samples of %s: %s",
            report["count"],
            config.data.path,
            ", ".join(f"{k} ({v})" for k, v in report["bad"].items()),
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m t2i.train CONFIG [section.key=value ...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m t2i.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="a YAML file, e.g. configs/shapes/vae.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help='"latest" (the newest complete checkpoint of the output folder, or a fresh start '
        "when there is none) or a checkpoint folder; the same as train.resume=CHECKPOINT",
    )
    args = parser.parse_intermixed_args(argv)  # the flag may come before the overrides
    if args.resume is not None:
        args.overrides.append(f"train.resume={args.resume}")
    rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch and torchrun
    level = logging.INFO if rank == 0 else logging.WARNING  # progress lines once, not per process
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    try:
        config = load_config(args.config, args.overrides)
        result = run(config, args.config)
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
