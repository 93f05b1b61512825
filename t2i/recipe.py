"""The from-scratch recipe: every stage of a pipeline trained on one data set, then assembled.

    python -m t2i.train configs/custom/pipeline.yaml data.path=DIR image_size=64 output_dir=OUT
    python -m t2i.train configs/custom/pipeline.yaml --preset          # list the presets

A recipe is a config with `model.type: recipe` (configs/custom/pipeline.yaml; the shipped
default's is configs/shapes/pipeline.yaml). Its `model.stages` name, in training order, each
stage, the pipeline component it trains and the stage config it trains (beside the recipe);
each stage's config gets, in this order:
1. the preset's keys for the data's image size (`model.preset`, rows in `model.presets`),
2. the recipe's own data keys (path, image size, split, ...) and its train keys (every one
   given applies to every stage; `max_steps` caps each stage's),
3. the runs it reads (`t2i.training.stages.readers`), and the model keys those runs fix
   (codebook size, grid, CLIP widths, latent shape; `t2i.training.inputs.reader_keys`),
4. `STAGE.section.key=value` overrides from the command line.
Each stage trains into RUNS/STAGE (RUNS: `model.runs`, default OUT/runs), resuming after a
kill. What went into it (its config, the data's contents, the weights of the runs it read)
is written in RUNS/STAGE/recipe.json: a finished stage with the same inputs is kept, and one
whose inputs changed is retrained, the earlier run moved aside to RUNS/STAGE.N, never lost.
The pipeline is assembled in float16 into OUT with the sampling settings of
`model.sampling`, the held-out split (heldout.json, so evaluation never sees a training
image) and what each component read (model_index.json's `_t2i_provenance`); the build
reports what each stage reached (OUT/build_report.json).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import DPMSolverMultistepScheduler

from t2i.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    apply_overrides,
    checker,
    config_model_type,
    from_dict,
    read_yaml,
)
from t2i.data.captioned import CaptionedDataset, detect_format
from t2i.data.sets import split_record
from t2i.models import MODELS, READER_KINDS, build_model, load_model, load_reader
from t2i.models.external import check_given_path, external_id, load_given
from t2i.pipelines import ROUTES, TextToImagePipeline
from t2i.pipelines.common import weights_id
from t2i.runs import flatten
from t2i.training import TrainResult, read_metrics
from t2i.training.inputs import check_readers, needs, reader_keys
from t2i.training.stages import COMPONENTS, PREPARED_BY, READS_OF, final_stages, readers

logger = logging.getLogger("t2i.recipe")
DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}

TrainOne = Callable[[ExperimentConfig, str], TrainResult]  # t2i.train.run
SPLIT = "heldout.json"  # in the pipeline: the held-out samples of its data set
REPORT = "build_report.json"
STAMP = "recipe.json"  # in each stage's run: the inputs it was trained on
RECIPE_KEYS = {"type", "preset", "presets", "routes", "stages", "sampling", "runs", "max_mb"}
RECIPE_KEYS |= {"min_images"}
DROPPED = ("train.output_dir", "train.resume", "data.token_cache", "data.num_workers")
PASSED_DATA = (  # the recipe's data keys every stage gets
    "dataset",
    "path",
    "caption_column",
    "image_column",
    "random_crop",
    "check_images",
    "image_size",
    "num_val",
    "heldout",
    "seed",
    "num_workers",
)


@dataclasses.dataclass
class Stage:
    """One stage of a recipe.

    Args:
        name: the stage (its run folder's name, and the prefix of its overrides).
        trains: the pipeline component it trains (`t2i.training.stages.COMPONENTS`).
        config: the stage config it trains.
        init_from: an earlier stage whose model it fine-tunes (None: from scratch).
        pretrained: a component given instead of trained, or to start from (`STAGE.pretrained`:
            a local folder or file, `t2i.models.external.load_given`).
        freeze: use `pretrained` as given, training nothing (False: train from it).
    """

    name: str
    trains: str
    config: Path
    init_from: str | None = None
    pretrained: str | None = None
    freeze: bool = False


@dataclasses.dataclass
class Recipe:
    """A recipe config, read and checked (see the module docstring).

    Args:
        source: the recipe file.
        stages: its stages, in training order (only those of `routes`).
        data: the data keys given to every stage.
        train: the train keys given to every stage (`max_steps`: a cap).
        out: the pipeline's folder (`train.output_dir`).
        runs: the stages' runs.
        preset: the preset's keys for the image size: stage -> {dotted key: value}.
        sampling: the sampling settings the pipeline records.
        stage_overrides: stage -> its command-line `section.key=value` overrides.
        max_mb: the pipeline's size budget (None: none).
        min_images: below this many images the build warns that it will memorise them.
    """

    source: Path
    stages: list[Stage]
    data: dict
    train: dict
    out: Path
    runs: Path
    preset: dict
    sampling: dict
    stage_overrides: dict[str, list[str]]
    max_mb: float | None = None
    min_images: int = 1000

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(stage, component it trains), in training order."""
        return [(s.name, s.trains) for s in self.stages]


def is_recipe(path: str | Path) -> bool:
    """Whether a config file is a recipe (`model.type: recipe`)."""
    return config_model_type(path) == "recipe"


# ---- reading a recipe ----------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe config and its stages' configs, with clear errors before any training.

    Args:
        path: the recipe file.
        overrides: `section.key=value` (a single section's key may go without it:
            `image_size=64`), or `STAGE.section.key=value` for one stage's config.

    Raises:
        ConfigError: a bad key, value, stage, route or preset, naming it.
    """
    path, where = Path(path), str(path)
    raw = read_yaml(path)
    listed = [s.get("stage") for s in (raw.get("model") or {}).get("stages") or []]
    mine = [o for o in overrides or [] if o.split("=", 1)[0].split(".", 1)[0] not in listed]
    apply_overrides(raw, mine)
    model = raw.get("model") or {}
    unknown = sorted(set(model) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key 'model.{unknown[0]}' of a recipe")
    checked = from_dict(ExperimentConfig, {k: v for k, v in raw.items() if k != "model"}, where)
    stages = _stages(path, model, where)
    per_stage = {s.name: [] for s in stages}
    for item in overrides or []:
        name, _, rest = item.partition(".")
        if name in per_stage:
            per_stage[name] += _given_override(next(s for s in stages if s.name == name), rest)
    out = Path(checked.train.output_dir)
    recipe = Recipe(
        source=path,
        stages=stages,
        data=raw.get("data") or {},
        train=raw.get("train") or {},
        out=out,
        runs=Path(model["runs"]) if model.get("runs") else out / "runs",
        preset=_preset(path, model, checked.data.image_size, where),
        sampling=model.get("sampling") or {},
        stage_overrides=per_stage,
        max_mb=model.get("max_mb"),
        min_images=model.get("min_images", 1000),
    )
    for stage in recipe.stages:  # every stage config reads, before anything trains
        stage_config(recipe, stage, {})
        _check_given(stage)
    return recipe


def _check_given(stage: Stage) -> None:
    """A ConfigError for a given component that cannot be: freeze without a path, a path
    that is not there or holds pickled weights only, or one with an earlier stage to start
    from as well."""
    key = f"{stage.name}.pretrained"
    if stage.freeze and not stage.pretrained:
        raise ConfigError(f"{stage.name}.freeze=true uses a given component: set {key}=PATH")
    if not stage.pretrained:
        return
    if stage.init_from:
        raise ConfigError(f"{key}: the stage starts from stage {stage.init_from} already")
    try:
        check_given_path(stage.pretrained)
    except (FileNotFoundError, ValueError) as err:
        text = str(err).removeprefix(f"{stage.pretrained}: ")
        raise ConfigError(f"{key}={stage.pretrained}: {text}") from err


def _given_override(stage: Stage, item: str) -> list[str]:
    """A stage's command-line override: `pretrained=PATH` and `freeze=BOOL` set the stage
    (returning nothing), `text_pretrained=DIR` and `freeze_text=BOOL` (a CLIP's text tower)
    become its model keys; any other `section.key=value` is returned as it is."""
    key, eq, value = item.partition("=")
    if key == "pretrained" and eq:
        stage.pretrained = value
        return []
    if key in ("freeze", "freeze_text") and eq:
        flag = yaml.safe_load(value)
        if not isinstance(flag, bool):
            raise ConfigError(f"{stage.name}.{key}={value!r}: true or false")
        if key == "freeze":
            stage.freeze = flag
            return []
    if key in ("text_pretrained", "freeze_text") and stage.trains != "clip":
        raise ConfigError(
            f"{stage.name}.{key}: the stage trains the {stage.trains}; a text tower "
            "is CLIP's (the stage training clip)"
        )
    if key == "text_pretrained" and eq:
        return [f"model.text_model={value}"]
    if key == "freeze_text":
        return [f"model.lock_text={str(flag).lower()}"]
    return [item]


def _stages(path: Path, model: dict, where: str) -> list[Stage]:
    """The recipe's stages of its routes, checked: known components, configs that exist,
    inputs some earlier stage trains."""
    routes = model.get("routes") or list(ROUTES)
    bad = [r for r in routes if r not in ROUTES]
    if bad:
        raise ConfigError(f"{where}: model.routes: {bad[0]!r} is not one of {', '.join(ROUTES)}")
    wanted = {"clip"} | {c for r in routes for c in ROUTES[r].component_names()}
    stages = []
    for item in model.get("stages") or []:
        name, trains = item.get("stage"), item.get("trains")
        if trains not in COMPONENTS:
            raise ConfigError(
                f"{where}: model.stages: {name}: trains={trains!r} is not one of "
                f"{', '.join(COMPONENTS)}"
            )
        config = path.parent / item.get("config", f"{name}.yaml")
        if not config.is_file():
            raise ConfigError(f"{where}: model.stages: {name}: no config file {config}")
        if trains in wanted:
            given = {k: item[k] for k in ("pretrained", "freeze") if k in item}
            stages.append(Stage(name, trains, config, item.get("init_from"), **given))
    names = [s.name for s in stages]
    for s in stages:
        if s.init_from and s.init_from not in names[: names.index(s.name)]:
            raise ConfigError(
                f"{where}: model.stages: {s.name}: init_from={s.init_from!r} names no earlier stage"
            )
    return stages


def _preset(path: Path, model: dict, image_size: int, where: str) -> dict:
    """The preset's rows for `image_size`: stage -> {dotted key: value} ({} for none)."""
    name = model.get("preset")
    if name is None:
        return {}
    presets = read_presets(path, model)
    if name not in presets:
        raise ConfigError(
            f"{where}: model.preset={name!r} is not one of {', '.join(presets)} "
            "(--preset lists them)"
        )
    sizes = {k: v for k, v in presets[name].items() if isinstance(k, int)}
    if image_size not in sizes:
        raise ConfigError(
            f"{where}: data.image_size={image_size}: preset {name!r} has "
            f"{', '.join(map(str, sizes))} px"
        )
    return sizes[image_size]


def read_presets(path: str | Path, model: dict | None = None) -> dict:
    """The presets file a recipe names (`model.presets`, beside it): name -> {about, sizes}."""
    path = Path(path)
    if model is None:
        model = read_yaml(path).get("model") or {}
    if not model.get("presets"):
        return {}
    return read_yaml(path.parent / model["presets"])


def preset_table(path: str | Path) -> str:
    """The presets of a recipe, a line per preset and image size (what `--preset` prints)."""
    lines = []
    for name, preset in read_presets(path).items():
        lines.append(f"{name}: {preset.get('about', '')}")
        for size, rows in preset.items():
            if isinstance(size, int):
                keys = "; ".join(
                    f"{stage} " + ", ".join(f"{k}={v}" for k, v in row.items())
                    for stage, row in rows.items()
                )
                lines.append(f"  {size} px: {keys}")
    return "\n".join(lines) or f"{path}: no presets"


# ---- one stage's config --------------------------------------------------------------------


def stage_config(
    recipe: Recipe, stage: Stage, read: dict[str, torch.nn.Module]
) -> ExperimentConfig:
    """A stage's config: its file, the preset, the recipe's keys, the runs it reads and the
    model keys they fix (from `read`: data key -> the loaded reader), its overrides.

    Args:
        recipe: the recipe.
        stage: the stage.
        read: the readers already trained (empty while only checking the configs).
    """
    where = f"{recipe.source} [{stage.name}: {stage.config}]"
    raw = read_yaml(stage.config)
    for key, value in (recipe.preset.get(stage.name) or {}).items():
        _set(raw, key, copy.deepcopy(value))
    data, train = raw.setdefault("data", {}), raw.setdefault("train", {})
    data.update({k: v for k, v in recipe.data.items() if k in PASSED_DATA})
    if data.get("path"):
        data["dataset"] = "captioned"
    model = raw.setdefault("model", {})
    if "image_size" in model and "image_size" in data:  # a tokenizer, CLIP, autoencoder
        model["image_size"] = data["image_size"]
    for key, value in recipe.train.items():
        if key == "max_steps":
            train[key] = min(value, train.get(key, value))
        elif key != "output_dir":
            train[key] = value
    train.update(output_dir=str(recipe.runs / stage.name), resume="latest")
    index = [s.name for s in recipe.stages].index(stage.name)
    keys = _input_keys(recipe, stage, index, model, where)
    for key, run in keys.items():
        _set(raw, key, str(recipe.runs / run))
    if any(k.startswith("data.") for k in keys):
        data["token_cache"] = str(recipe.runs / "token_cache")
    if stage.init_from is None:
        for key, value in reader_keys(_reads(model, where), **read).items():
            model[key] = value
    if "clip" in read:  # captions tokenised as the CLIP read tokenises them
        data["context_length"] = read["clip"].config.context_length
    apply_overrides(raw, recipe.stage_overrides.get(stage.name, []), where)
    config = from_dict(ExperimentConfig, raw, where)
    _reads(config.model, where)  # every model key known, of its type
    return config


def _input_keys(recipe: Recipe, stage: Stage, index: int, model: dict, where: str) -> dict:
    """The runs a stage reads: config key (data.clip, init_from) -> stage."""
    try:
        found = readers(recipe.pairs, index, needs(_reads(model, where)))
    except ValueError as err:
        raise ConfigError(f"{recipe.source}: {err}") from err
    keys = {f"data.{key}": run for key, run in found.items()}
    if stage.init_from:
        keys["init_from"] = stage.init_from
    return keys


def _reads(model: dict, where: str) -> frozenset[str]:
    """What a model section's model reads (its class's declared inputs)."""
    try:
        return build_model(copy.deepcopy(model), checker(f"{where}: model")).reads
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: model: {err}") from err


def _set(raw: dict, dotted: str, value: Any) -> None:
    """raw["a"]["b"] = value for dotted "a.b"."""
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# ---- inputs, kept or retrained ---------------------------------------------------------------


def data_identity(path: str | Path) -> str:
    """A hash of a data set's contents: every file's name and size, and the bytes of its
    caption and metadata files (so a changed caption or a new image changes it; moving the
    folder does not)."""
    root, digest = Path(path), hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0".encode())
        digest.update(f"{file.stat().st_size}\0".encode())
        if file.suffix.lower() in {".txt", ".jsonl", ".json", ".csv", ".tsv"}:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def stage_inputs(config: ExperimentConfig, keys: dict[str, str], runs: Path) -> dict[str, Any]:
    """What a stage's model depends on, as a flat dict: its config's keys (paths replaced by
    what they hold: the data's contents, the read runs' weights)."""
    flat = flatten(dataclasses.asdict(config))
    for key in DROPPED:
        flat.pop(key, None)
    if flat.get("data.path"):
        flat["data.path"] = data_identity(flat["data.path"])
    for key, run in keys.items():
        flat[key] = weights_id(runs / run / "model")
    return flat


def legacy_inputs(config: ExperimentConfig) -> dict[str, Any]:
    """A stage's config as a flat dict with the runs it reads by folder name: what a run
    recorded before recipe.json existed is compared with."""
    flat = flatten(dataclasses.asdict(config))
    for key in DROPPED:
        flat.pop(key, None)
    return _by_name(flat, flat)


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def set_aside(run: Path) -> Path:
    """Move a run folder to the first free RUN.N; return where it went."""
    n = 1
    while run.with_name(f"{run.name}.{n}").exists():
        n += 1
    aside = run.with_name(f"{run.name}.{n}")
    run.rename(aside)
    return aside


def settle(run: Path, inputs: dict[str, Any], legacy: dict[str, Any]) -> str:
    """Make a stage's run folder fit its inputs: "kept" (trained on them), "resume" (started
    on them), "new" (none yet), "adopted" (a finished run with no record of its inputs, whose
    config.yaml matches `legacy`: its config with the runs it reads by folder name), or
    "retrained" (the old run, on other inputs, set aside)."""
    stamp = run / STAMP
    finished = (run / "model" / "config.json").is_file()
    if stamp.is_file():
        old = json.loads(stamp.read_text())["inputs"]
        if old == inputs:
            return "kept" if finished else "resume"
    elif not run.exists() or not any(run.iterdir()):
        return "new"
    else:
        old = {}
        if finished and (run / "config.yaml").is_file():
            recorded = flatten(read_yaml(run / "config.yaml"))
            if not _changed(_by_name(recorded, legacy), legacy):
                return "adopted"
    aside = set_aside(run)
    changed = _changed(old, inputs) if old else ["no record of what it read"]
    logger.warning(
        "%s: its inputs changed (%s): retraining it; the earlier run is kept in %s",
        run.name,
        ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else ""),
        aside,
    )
    return "retrained"


def _by_name(recorded: dict[str, Any], legacy: dict[str, Any]) -> dict[str, Any]:
    """A recorded config's keys that `legacy` has, its paths of runs by folder name."""
    out = {k: recorded.get(k) for k in legacy}
    for key in ("data.tokenizer", "data.clip", "data.autoencoder", "init_from"):
        if out.get(key):
            out[key] = Path(out[key]).name
    return out


# ---- the build -----------------------------------------------------------------------------


def build_pipeline(recipe: Recipe, train_one: TrainOne) -> TrainResult:
    """Train every stage of a recipe (keeping those already trained on the same inputs),
    then assemble and save the pipeline (see the module docstring).

    Args:
        recipe: the recipe (`load_recipe`).
        train_one: trains one model from a config (`t2i.train.run`).
    """
    check_out(recipe)
    held_out = check_data(recipe)
    given = check_given(recipe)
    report = {}
    for stage in recipe.stages:
        report[stage.name] = train_stage(recipe, stage, given, train_one)
    path = assemble(recipe, held_out)
    summary = {"stages": report}
    (path / REPORT).write_text(json.dumps(summary, indent=2) + "\n")
    for name, row in report.items():
        logger.info("%s: %s", name, ", ".join(f"{k} {v}" for k, v in row.items()))
    last = recipe.stages[-1].name
    return TrainResult(report[last].get("steps", 0), report[last], 0, path)


def check_out(recipe: Recipe) -> None:
    """Refuse an output folder that holds something other than this recipe's pipeline."""
    out = recipe.out
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = (out / "model_index.json").is_file() or (out / "runs").is_dir()
    if not ours:
        raise ConfigError(
            f"train.output_dir={str(out)!r} holds something else than a pipeline; "
            "choose another train.output_dir"
        )


def check_data(recipe: Recipe) -> dict[str, Any] | None:
    """Read a captioned data set once (bad files reported), warn when it is small; return
    its held-out split as the pipeline records it (heldout.json: the sources relative to the
    data folder, and the split file's parts when it names some), or None for the shapes
    world."""
    path = recipe.data.get("path")
    if not path:
        return None
    data = DataConfig(**{k: v for k, v in recipe.data.items() if k in DATA_FIELDS})
    try:
        detect_format(path)
        full = CaptionedDataset(path, data.image_size, data.caption_column, data.image_column)
        split = split_record(full, data)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.path={path!r}: {err}") from err
    if len(full) < recipe.min_images:
        logger.warning(
            "data.path=%s has %d images, under %d: the models will memorise them rather than "
            "learn from them; expect held-out figures well below training ones",
            path,
            len(full),
            recipe.min_images,
        )
    return split


def train_stage(
    recipe: Recipe, stage: Stage, given: dict[str, torch.nn.Module], train_one: TrainOne
) -> dict[str, Any]:
    """Train one stage (or keep it, or take it as given: `given`, stage -> the component
    `check_given` loaded and checked); return what it reached."""
    index = [s.name for s in recipe.stages].index(stage.name)
    draft = stage_config(recipe, stage, {})
    keys = _input_keys(recipe, stage, index, draft.model, str(recipe.source))
    read = {
        k.removeprefix("data."): _reader(k.removeprefix("data."), recipe.runs / run)
        for k, run in keys.items()
        if k.startswith("data.")
    }
    config = stage_config(recipe, stage, read)
    run = recipe.runs / stage.name
    inputs = stage_inputs(config, keys, recipe.runs)
    origin = given_origin(stage, config)
    if origin:
        inputs["pretrained"] = {k: v for k, v in origin.items() if k != "path"}
    state = settle(run, inputs, legacy_inputs(config))
    start = time.monotonic()
    if state in ("kept", "adopted"):
        logger.info("%s: kept %s (trained on the same inputs)", stage.name, run / "model")
    if state != "kept":
        run.mkdir(parents=True, exist_ok=True)
        stamp = {"inputs": inputs, **({"origin": origin} if origin else {})}
        (run / STAMP).write_text(json.dumps(stamp, indent=1, default=str) + "\n")
    if state not in ("kept", "adopted") and stage.pretrained:
        model = given[stage.name]
        if stage.freeze:  # used as given: its run holds it, for the stages reading it
            model.save_pretrained(run / "model")
            return stage_summary(run, "given", time.monotonic() - start)
        model.save_pretrained(run / "given")
        config = dataclasses.replace(config, init_from=str(run / "given"))
        if "context_length" in model.config:  # captions as the given model reads them
            length = model.config.context_length
            config.data = dataclasses.replace(config.data, context_length=length)
    if state not in ("kept", "adopted"):
        train_one(config, f"{recipe.source} [{stage.name}]")
    return stage_summary(run, state, time.monotonic() - start)


def check_given(recipe: Recipe) -> dict[str, torch.nn.Module]:
    """Before any stage trains: load each given component and check it against what it
    reads, every other stage's model built untrained at its config (its shapes are what
    the given ones must fit); a mismatch is a ConfigError naming both sides. Returns the
    given components by stage, loaded once for the build."""
    if not any(stage.pretrained for stage in recipe.stages):
        return {}
    built: dict[str, torch.nn.Module] = {}
    for index, stage in enumerate(recipe.stages):
        draft = stage_config(recipe, stage, {})
        keys = _input_keys(recipe, stage, index, draft.model, str(recipe.source))
        read = {k.removeprefix("data."): built[run] for k, run in keys.items() if "data." in k}
        config = stage_config(recipe, stage, read)
        if stage.pretrained:
            built[stage.name] = given_model(recipe, stage, config, read)
        else:
            built[stage.name] = build_model(copy.deepcopy(config.model))
    return {s.name: built[s.name] for s in recipe.stages if s.pretrained}


def given_origin(stage: Stage, config: ExperimentConfig) -> dict[str, Any]:
    """Where a stage's given parts came from: {path, id, frozen} of `STAGE.pretrained`, and
    {text: {path, id, frozen}} of a CLIP's pretrained text tower ({} for neither)."""
    origin = {}
    if stage.pretrained:
        path = Path(stage.pretrained)
        origin = {"path": str(path.resolve()), "id": external_id(path), "frozen": stage.freeze}
    text = config.model.get("text_model") if stage.trains == "clip" else None
    if text:
        origin["text"] = {
            "path": str(Path(text).resolve()),
            "id": external_id(text),
            "frozen": bool(config.model.get("lock_text")),
        }
    return origin


def given_model(
    recipe: Recipe, stage: Stage, config: ExperimentConfig, read: dict[str, torch.nn.Module]
) -> torch.nn.Module:
    """The component a stage is given, as the t2i model of its slot, checked against the
    models it reads (a mismatch: one line naming both sides and the key to change)."""
    cls = READER_KINDS.get(READS_OF.get(stage.trains), MODELS[config.model["type"]])
    key = f"{stage.name}.pretrained={stage.pretrained}"
    try:
        model = load_given(
            stage.pretrained,
            cls,
            config.data.image_size,
            read.get("clip"),
            read.get("autoencoder"),
            config.model,
            stage.trains,
        )
        check_readers(model.config, model.reads, **read)
    except (FileNotFoundError, ValueError) as err:
        text = str(err).removeprefix(f"{stage.pretrained}: ")  # the key names the path
        raise ConfigError(f"{key}: {text}") from err
    size = getattr(model, "image_size", config.data.image_size)
    if stage.trains in ("vae", "image_tokenizer", "clip") and size != config.data.image_size:
        raise ConfigError(
            f"{key}: it reads {size} px images but data.image_size="
            f"{config.data.image_size}; set image_size={size}"
        )
    logger.info("%s: given %s (%s)", stage.name, stage.pretrained, type(model).__name__)
    return model


def _reader(key: str, run: Path) -> Any:
    return load_reader(key, str(run))


def stage_summary(run: Path, state: str, seconds: float) -> dict[str, Any]:
    """What a stage reached: steps, last logged loss, validation loss, sample scores."""
    rows = read_metrics(run / "logs" / "metrics.csv") if (run / "logs").is_dir() else []
    last = {k: v for row in rows for k, v in row.items() if v not in ("", None)}
    summary = {"state": state, "seconds": round(seconds, 1)}
    if (run / "validation.json").is_file():
        last.update(json.loads((run / "validation.json").read_text()))
    for key in ("step", "loss", "val/loss", "samples/fidelity"):
        if key in last:
            summary["steps" if key == "step" else key] = _number(last[key])
    summary["samples"] = sorted(p.name for p in (run / "samples").glob("*.png"))[-1:] or None
    return summary


def _number(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else round(number, 5)


def assemble(recipe: Recipe, held_out: dict[str, Any] | None) -> Path:
    """Load the final stages, cast to float16, save the pipeline to OUT with its sampling
    settings, provenance and held-out split; refuse one over the size budget."""
    components = final_stages(recipe.pairs)
    runs = recipe.runs
    parts = {
        n: load_model(runs / s, torch_dtype=torch.float16).eval() for n, s in components.items()
    }
    if "unet" in parts:  # the latent diffusion route samples with DPM-Solver++
        parts["scheduler"] = DPMSolverMultistepScheduler.from_config(parts["unet"].scheduler.config)
    pipe = TextToImagePipeline(**parts)
    pipe.sampling_defaults.update(recipe.sampling)
    pipe.provenance = provenance(recipe, components)
    tmp = recipe.out.with_name(f".tmp-{recipe.out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    for name, stage in components.items():  # how each part was trained (and its holdout)
        if (runs / stage / "config.yaml").is_file():  # (a part given as it is: its origin)
            shutil.copy(runs / stage / "config.yaml", tmp / name / "config.yaml")
    if held_out is not None:
        (tmp / SPLIT).write_text(json.dumps(held_out, indent=1) + "\n")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2**20
    if recipe.max_mb is not None and size > recipe.max_mb:
        shutil.rmtree(tmp)
        raise ConfigError(f"the pipeline is {size:.1f} MB, over the {recipe.max_mb} MB budget")
    _move_in(tmp, recipe.out)
    logger.info("pipeline: %s (%.1f MB)", recipe.out, size)
    return recipe.out


def provenance(recipe: Recipe, components: dict[str, str]) -> dict[str, Any]:
    """component -> {run, id (its run's weights), reads: component -> the id of the run it
    read (from its recipe.json)}."""
    record = {}
    for name, stage in components.items():
        stamp = json.loads((recipe.runs / stage / STAMP).read_text())["inputs"]
        reads = {
            PREPARED_BY[key]: stamp[f"data.{key}"]
            for key in PREPARED_BY
            if stamp.get(f"data.{key}") and PREPARED_BY[key] in components
        }
        record[name] = {
            "run": stage,
            "id": weights_id(recipe.runs / stage / "model"),
            "reads": reads,
        }
        origin = json.loads((recipe.runs / stage / STAMP).read_text()).get("origin")
        if origin:  # a given component: where it came from, and its weights then
            record[name]["origin"] = origin
    return record


def _move_in(tmp: Path, out: Path) -> None:
    """Put a saved pipeline in `out` (which may hold the runs), replacing an earlier one."""
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / n for n in [*COMPONENTS, "scheduler"]):
        shutil.rmtree(old, ignore_errors=True)
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_file():
            target.unlink()
        item.rename(target)
    tmp.rmdir()
