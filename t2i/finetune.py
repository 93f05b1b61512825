"""Fine-tune a saved pipeline's stages on new data: `python -m t2i.train CONFIG` with
`model: {type: pipeline, stages: [...]}` (configs/custom/finetune.yaml).

Each named stage is trained in the stage graph's order (`t2i.training.stages`), reading the
stages before it as they now are; the new pipeline is saved to `train.output_dir` with the
source's recorded sampling settings, the stages' runs in its runs/ folder.

A component that reads a retrained one (the unCLIP decoder reads CLIP and the tokenizer) no
longer fits it: with `model.downstream: retrain` it is retrained too, and by default
(`drop`) it is left out of the new pipeline with its route, with a warning that says so. The
pipeline records which run each component came from and the weights of those it read
(`_t2i_provenance`), and loading refuses one whose components disagree.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from t2i.cli import pipeline_path
from t2i.config import ConfigError, ExperimentConfig, config_model_type
from t2i.data.captioned import HELDOUT_FILE, CaptionedDataset, detect_format
from t2i.data.sets import split_record
from t2i.models import READER_KINDS, class_of, load_model, model_type
from t2i.models.external import check_given_path, external_id, load_given
from t2i.models.lora import LoraError, LoraSpec, read_lora, write_lora
from t2i.pipelines import TextToImagePipeline, check_pipeline_dir
from t2i.pipelines.bundle import NAMES, OWN
from t2i.pipelines.common import PROVENANCE, saved_components, weights_id
from t2i.training import TrainResult
from t2i.training.inputs import check_readers, needs
from t2i.training.stages import COMPONENTS, PREPARED_BY, READS_OF

logger = logging.getLogger("t2i.finetune")

TrainOne = Callable[[ExperimentConfig, str], TrainResult]  # t2i.train.run


def finetune_pipeline(config: ExperimentConfig, where: str, train_one: TrainOne) -> TrainResult:
    """Fine-tune the `model.stages` of a saved pipeline and save the new pipeline.

    Args:
        config: the experiment config (`model: {type: pipeline, stages: [...]}`).
        where: the config's source, named in errors.
        train_one: trains one model from a config (`t2i.train.run`).
    """
    stages, downstream, lora = _check_model(config, where)
    source = pipeline_path(config.init_from)
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
    given = check_given(config, where, current)
    if not stages and not given:
        raise ConfigError(f"{where}: model.stages is empty: name the components to fine-tune")
    origins = {}
    if given:
        origins = take_given(given, current, out, where)
        stages += [n for n in given if not given[n]["freeze"] and n not in stages]
        stages = [c for c in COMPONENTS if c in stages]
    reads = {name: component_reads(load_model(path)) for name, path in current.items()}
    stale = stale_components([*stages, *given], reads)
    dropped = []
    if downstream == "retrain":
        stages = [c for c in COMPONENTS if c in {*stages, *stale}]
    elif stale and lora is not None:  # adapters go on the whole base: nothing can be left out
        raise ConfigError(
            f"{where}: model.lora on {' and '.join(stages)} changes what {' and '.join(stale)} "
            f"read: add {' and '.join(stale)} to model.stages, or set model.downstream=retrain"
        )
    elif stale:
        dropped = _dropped(stale, has, stages, where)
    if given:
        check_fits(stages, current, where)
    record = source_provenance(source, index, reads)
    for name, origin in origins.items():  # a given component: its folder, and where from
        record[name] = {
            "run": str(current[name]),
            "id": weights_id(current[name]),
            "reads": {r: record[r]["id"] for r in reads[name]},
            "origin": origin,
        }
    held_out = data_split(config, where)
    result = None
    for stage in (s for s in COMPONENTS if s in stages):
        stage_cfg = stage_config(config, stage, current, out)
        if lora is not None:
            stage_cfg.model["lora"] = lora
        result = train_one(stage_cfg, f"{where} [{stage}]")
        current[stage] = result.model_dir
        record[stage] = {
            "run": str(result.model_dir.parent),
            "id": weights_id(result.model_dir),
            "reads": {r: record[r]["id"] for r in reads[stage]},
            **({"origin": origins[stage]} if stage in origins else {}),
        }
    if result is None:  # only given components, used as they are
        result = TrainResult(0, {}, 0, out)
    if lora is not None:  # the adapters alone, naming their base pipeline
        save_adapters(config.init_from, source, {s: current[s] for s in stages}, out)
    else:
        save_finetuned(source, index, current, dropped, record, out)
    if held_out is not None:  # what the new pipeline's evaluation holds out
        (out / HELDOUT_FILE).write_text(json.dumps(held_out, indent=1) + "\n")
    else:  # the source's split is not this data's
        (out / HELDOUT_FILE).unlink(missing_ok=True)
    logger.info("fine-tuned pipeline (%s) saved to %s", ", ".join(stages), out)
    return dataclasses.replace(result, model_dir=out)


GIVEN_KEYS = ("pretrained", "freeze", "architecture")  # architecture: of an open_clip file


def is_finetune(path: str | Path) -> bool:
    """Whether a config file fine-tunes a pipeline (`model.type: pipeline`)."""
    return config_model_type(path) == "pipeline"


def given_overrides(overrides: list[str]) -> list[str]:
    """A fine-tuning command line's `COMPONENT.pretrained=PATH` and `COMPONENT.freeze=BOOL`
    as the config's `model.given.COMPONENT` keys; the other overrides as they are."""
    mapped = []
    for item in overrides:
        key, eq, value = item.partition("=")
        name, _, rest = key.partition(".")
        if eq and name == "clip" and rest in ("text_pretrained", "freeze_text"):
            raise ConfigError(
                f"{key}: a new text tower changes the text states every prior and denoiser "
                "reads, so they cannot be fine-tuned on it; build the pipeline with the recipe "
                f"(configs/custom/pipeline.yaml {key}=...)"
            )
        if eq and name in COMPONENTS and rest in GIVEN_KEYS:
            item = f"model.given.{name}.{rest}={value}"
        mapped.append(item)
    return mapped


def check_given(config: ExperimentConfig, where: str, current: dict[str, Path]) -> dict:
    """`model.given`, checked: component -> {pretrained: path, freeze: bool}, for components
    the pipeline holds, paths that are there, with safetensors weights."""
    given = config.model.get("given") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: model.given must map components to pretrained and freeze")
    checked = {}
    for name, entry in given.items():
        key = f"{name}.pretrained"
        if name not in current:
            raise ConfigError(
                f"{where}: {key}: the pipeline has no {name} (it has {', '.join(current)})"
            )
        unknown = sorted(set(entry or {}) - set(GIVEN_KEYS))
        if not isinstance(entry, dict) or unknown or not entry.get("pretrained"):
            raise ConfigError(
                f"{where}: {name}: give {key}=PATH (and {name}.freeze=true to use it as it is)"
            )
        freeze = entry.get("freeze", False)
        if not isinstance(freeze, bool):
            raise ConfigError(f"{where}: {name}.freeze={freeze!r}: true or false")
        path = Path(str(entry["pretrained"]))
        try:
            check_given_path(path)
        except (FileNotFoundError, ValueError) as err:
            text = str(err).removeprefix(f"{path}: ")
            raise ConfigError(f"{where}: {key}={path}: {text}") from err
        checked[name] = {
            "pretrained": path,
            "freeze": freeze,
            "architecture": entry.get("architecture"),
        }
    return {c: checked[c] for c in COMPONENTS if c in checked}


def take_given(given: dict, current: dict[str, Path], out: Path, where: str) -> dict:
    """Read each given component into its slot (saved under OUT/runs/NAME/given, which it
    replaces in `current`), checked against the components it reads; return their origins."""
    size = image_size(current)
    origins = {}
    for name, entry in given.items():
        path, key = entry["pretrained"], f"{name}.pretrained={entry['pretrained']}"
        readers = {
            k: load_model(current[PREPARED_BY[k]])
            for k in PREPARED_BY
            if PREPARED_BY[k] in current and PREPARED_BY[k] != name
        }
        slot = READER_KINDS.get(READS_OF.get(name)) or class_of(current[name])  # config only
        try:
            options = {"architecture": entry["architecture"]}
            model = load_given(
                path, slot, size, readers.get("clip"), readers.get("autoencoder"), options, name
            )
            check_readers(model.config, model.reads, **{k: readers[k] for k in needs(model.reads)})
        except (FileNotFoundError, ValueError) as err:
            text = str(err).removeprefix(f"{path}: ")
            raise ConfigError(f"{where}: {key}: {text}") from err
        folder = out / "runs" / name / "given"
        model.save_pretrained(folder)
        current[name] = folder
        origins[name] = {
            "path": str(path.resolve()),
            "id": external_id(path),
            "frozen": entry["freeze"],
        }
        logger.info("%s: given %s (%s)", name, path, "frozen" if entry["freeze"] else "trained")
    return origins


def check_fits(stages: list[str], current: dict[str, Path], where: str) -> None:
    """Before any training: each stage to train from its weights must fit the components it
    reads as they now are (given ones among them); a ConfigError names both sides."""
    for stage in stages:
        model = load_model(current[stage])
        keys = needs(model.reads)
        readers = {
            k: load_model(current[PREPARED_BY[k]]) for k in keys if PREPARED_BY[k] in current
        }
        try:
            check_readers(model.config, model.reads, **readers)
        except ValueError as err:
            text = str(err).split("; set ")[0]  # its weights fix the first value
            raise ConfigError(
                f"{where}: the {stage} cannot be fine-tuned on the given components: {text}, "
                f"and its weights are shaped for the first; give components that fit it, or "
                f"train a new {stage} with the recipe"
            ) from err


def data_split(config: ExperimentConfig, where: str) -> dict[str, Any] | None:
    """The held-out split of a captioned data set in a folder, as the pipeline records it
    (`split_record`), checked before any training; None for other data."""
    data = config.data
    if not data.path:  # the shapes world: no split file
        return None
    try:
        if detect_format(data.path) == "webdataset":
            return None
        full = CaptionedDataset(data.path, data.image_size, data.caption_column, data.image_column)
        return split_record(full, data)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: data.path={data.path!r}: {err}") from err


def _check_model(config: ExperimentConfig, where: str) -> tuple[list[str], str, dict | None]:
    """The model section's stages, downstream policy and LoRA adapters, checked."""
    stages = config.model.get("stages")
    stages = ["prior"] if stages is None else stages  # [] with given components only
    downstream = config.model.get("downstream", "drop")
    unknown = [s for s in stages if s not in COMPONENTS]
    if unknown or set(config.model) - {"type", "stages", "downstream", "lora", "given"}:
        raise ConfigError(
            f"{where}: model.type=pipeline takes only model.stages, a list of "
            f"{', '.join(COMPONENTS)}, model.downstream and model.lora "
            f"(got {unknown or sorted(config.model)})"
        )
    if downstream not in ("drop", "retrain"):
        raise ConfigError(f"{where}: model.downstream={downstream!r}: use drop or retrain")
    lora = config.model.get("lora")
    if lora is not None:
        try:
            LoraSpec.from_dict(lora, where)
        except LoraError as err:
            raise ConfigError(str(err)) from err
        lora = dict(lora)
    return list(stages), downstream, lora


def save_adapters(given: str | None, source: Path, runs: dict[str, Path], out: Path) -> None:
    """Save the stages' adapters (component -> its run's adapter folder) as one adapter
    folder for the source pipeline: `pipe.load_lora_weights(out)` on it."""
    parts = {}
    for name, folder in runs.items():
        config, weights = read_lora(folder)
        parts[name] = (config["components"]["model"], weights["model"])
    flat = {f"{n}.{k}": v for n, (_, w) in parts.items() for k, v in w.items()}
    components = {n: entry for n, (entry, _) in parts.items()}
    write_lora(out, components, flat, base_pipeline=given or str(source))


def component_reads(model: torch.nn.Module) -> list[str]:
    """The pipeline components a model reads the outputs of (its declared inputs)."""
    return [PREPARED_BY[key] for key in needs(model.reads)]


def stale_components(stages: list[str], reads: dict[str, list[str]]) -> list[str]:
    """The components, not among `stages`, that read a retrained one (directly, or through
    another such component), in training order."""
    changed, stale = set(stages), []
    for name in COMPONENTS:
        if name in reads and name not in changed and changed & set(reads[name]):
            changed.add(name)
            stale.append(name)
    return stale


def _dropped(stale: list[str], has: list[str], stages: list[str], where: str) -> list[str]:
    """The components left out for `stale` ones: their whole routes; a ConfigError when one
    is a component every pipeline needs."""
    core = [c for c in stale if c in ("clip", "image_tokenizer", "prior")]
    if core:
        raise ConfigError(
            f"{where}: model.stages={stages} retrains what the {core[0]} reads, and every "
            f"pipeline needs a {core[0]}: add {core[0]} to model.stages, or set "
            "model.downstream=retrain"
        )
    dropped = [n for route in OWN.values() if set(route) & set(stale) for n in route if n in has]
    routes = [NAMES[r] for r, names in OWN.items() if set(names) & set(stale)]
    logger.warning(
        "model.stages=%s retrains what %s read: the new pipeline leaves out %s (the %s "
        "route); add them to model.stages, or set model.downstream=retrain, to keep them",
        stages,
        " and ".join(stale),
        ", ".join(dropped),
        " and ".join(routes),
    )
    return dropped


def source_provenance(source: Path, index: dict, reads: dict[str, list[str]]) -> dict:
    """The source pipeline's provenance: as recorded, or (a pipeline saved without one) each
    component's weights, taken to have read the components beside it."""
    record = dict(index.get(PROVENANCE) or {})
    ids = {name: weights_id(source / name) for name in reads if name not in record}
    for name in ids:
        record[name] = {
            "run": str(source / name),
            "id": ids[name],
            "reads": {r: (record.get(r) or {}).get("id") or ids[r] for r in reads[name]},
        }
    return record


def save_finetuned(
    source: Path, index: dict, current: dict, dropped: list[str], record: dict, out: Path
) -> None:
    """Save the new pipeline: the current components less the dropped ones, the source's
    scheduler and sampling settings, and the provenance."""
    parts = {n: load_model(p).eval() for n, p in current.items() if n not in dropped}
    if "scheduler" in index and "scheduler" not in dropped and "unet" in parts:
        library, cls = index["scheduler"]  # the latent diffusion route's sampler, as saved
        parts["scheduler"] = getattr(importlib.import_module(library), cls).from_pretrained(
            source, subfolder="scheduler"
        )
    pipe = TextToImagePipeline(**parts)
    pipe.sampling_defaults.update(index.get("_t2i_sampling") or {})  # the source's measured
    pipe.provenance = {n: v for n, v in record.items() if n in parts}
    pipe.save_pretrained(out)


def stage_config(
    config: ExperimentConfig, stage: str, current: dict[str, Path], out: Path
) -> ExperimentConfig:
    """One fine-tuning stage's config: the component as the model, the data at the sizes of
    the pipeline's tokenizer and CLIP, the components it reads, the stage's run folder."""
    clip = load_model(current["clip"])
    model = load_model(current[stage])
    reads = {key: str(current[PREPARED_BY[key]]) for key in needs(model.reads)}
    data = dataclasses.replace(
        config.data,
        image_size=image_size(current) if stage != "clip" else config.data.image_size,
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


def image_size(current: dict[str, Path]) -> int:
    """The pipeline's image size: its image tokenizer's, else its autoencoder's (a latent
    diffusion pipeline), else its CLIP's."""
    for name in ("image_tokenizer", "vae", "clip"):
        if name in current:
            return load_model(current[name]).config.image_size
    raise ValueError("the pipeline has no image tokenizer, autoencoder or CLIP")
