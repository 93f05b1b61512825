"""Fine-tune a saved pipeline's stages on new data: `python -m t2i.train CONFIG` with
`model: {type: pipeline, stages: [...]}` (configs/custom/finetune.yaml).

Each named stage is trained in the stage graph's order (`t2i.training.stages`), reading the
stages before it as they now are; the new pipeline is saved to `train.output_dir` with the
source's recorded sampling settings, the stages' runs in its runs/ folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from t2i.config import ConfigError, ExperimentConfig
from t2i.models import load_model, model_type
from t2i.pipelines import DEFAULT_PIPELINE, TextToImagePipeline, check_pipeline_dir
from t2i.pipelines.common import saved_components
from t2i.training import TrainResult
from t2i.training.inputs import needs
from t2i.training.stages import COMPONENTS, PREPARED_BY

logger = logging.getLogger("t2i.finetune")

TrainOne = Callable[[ExperimentConfig, str], TrainResult]  # t2i.train.run


def finetune_pipeline(config: ExperimentConfig, where: str, train_one: TrainOne) -> TrainResult:
    """Fine-tune the `model.stages` of a saved pipeline and save the new pipeline.

    Args:
        config: the experiment config (`model: {type: pipeline, stages: [...]}`).
        where: the config's source, named in errors.
        train_one: trains one model from a config (`t2i.train.run`).
    """
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
    has = saved_components(index)
    current = {name: source / name for name in COMPONENTS if name in has}  # in training order
    missing = [s for s in stages if s not in current]
    if missing:
        raise ConfigError(
            f"{where}: model.stages names {', '.join(missing)}, which the pipeline at "
            f"{str(source)!r} does not have (it has {', '.join(current)})"
        )
    out = Path(config.train.output_dir)
    result = None
    for stage in (s for s in COMPONENTS if s in stages):
        result = train_one(stage_config(config, stage, current, out), f"{where} [{stage}]")
        current[stage] = result.model_dir
    parts = {name: load_model(path).eval() for name, path in current.items()}
    if "scheduler" in has:  # the latent diffusion route's sampler, as the source saved it
        library, cls = index["scheduler"]
        parts["scheduler"] = getattr(importlib.import_module(library), cls).from_pretrained(
            source, subfolder="scheduler"
        )
    pipe = TextToImagePipeline(**parts)
    pipe.sampling_defaults.update(index.get("_t2i_sampling") or {})  # the source's measured
    pipe.save_pretrained(out)
    logger.info("fine-tuned pipeline (%s) saved to %s", ", ".join(stages), out)
    return dataclasses.replace(result, model_dir=out)


def stage_config(
    config: ExperimentConfig, stage: str, current: dict[str, Path], out: Path
) -> ExperimentConfig:
    """One fine-tuning stage's config: the component as the model, the data at the sizes of
    the pipeline's tokenizer and CLIP, the components it reads, the stage's run folder."""
    tokenizer, clip = load_model(current["image_tokenizer"]), load_model(current["clip"])
    model = load_model(current[stage])
    reads = {key: str(current[PREPARED_BY[key]]) for key in needs(model.reads)}
    data = dataclasses.replace(
        config.data,
        image_size=tokenizer.config.image_size if stage != "clip" else config.data.image_size,
        context_length=clip.config.context_length,
        tokenizer=reads.get("tokenizer"),
        clip=reads.get("clip"),
        autoencoder=reads.get("autoencoder"),
    )
    return dataclasses.replace(
        config,
        model={"type": model_type(model)},
        data=data,
        train=dataclasses.replace(config.train, output_dir=str(out / "runs" / stage)),
        init_from=str(current[stage]),
    )
