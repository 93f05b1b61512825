"""What t2i's command lines share, light enough to import before anything heavy: a parser
whose errors are one line (no usage dump), and value types that name what they refuse, so a
bad flag is refused before torch is imported."""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i.config import read_text

LORA_CONFIG = "lora_config.json"  # t2i.models.lora.CONFIG_FILE, here without importing torch
ROUTE_NAMES = ("dalle", "unclip", "ldm", "maskgit")  # t2i.pipelines.ROUTES' keys, torch-free


def read_split(path: str | Path) -> dict[str, Any]:
    """A heldout.json, checked (torch-free): {"held_out": [sources relative to the data
    folder], "parts": {name: [sources]} (optional)}, with whatever else it records
    (`data_path`).

    Raises:
        ValueError: not such a file (naming it and what is wrong: not UTF-8, not JSON, no
            held_out list).
    """
    try:
        written = json.loads(read_text(path))
        listed = written["held_out"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a held-out split ({type(err).__name__}: {err})") from None
    parts = written.get("parts") or {}
    if not isinstance(listed, list) or not isinstance(parts, dict):
        raise ValueError(f"{path}: held_out must be a list of sources and parts a dict of them")
    return {**written, "held_out": listed, "parts": parts}


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(text: str, whole: bool) -> float | int:
    try:
        return int(text) if whole else float(text)
    except ValueError:
        kind = "whole number" if whole else "number"
        raise argparse.ArgumentTypeError(f"{text!r} is not a {kind}") from None


def finite(text: str) -> float:
    """A finite number >= 0 (a guidance scale, a temperature)."""
    value = _number(text, whole=False)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number >= 0")
    return value


def at_least(low: int) -> Callable[[str], int]:
    """A whole number >= low."""

    def parse(text: str) -> int:
        value = _number(text, whole=True)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be a whole number >= {low}")
        return value

    return parse


def between(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        value = _number(text, whole=True)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: must be a whole number in [{low}, {high}]")
        return value

    return parse


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    value = _number(text, whole=True)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: must be a port, 1-65535")
    return value


def fraction(open_below: bool) -> Callable[[str], float]:
    """A number in (0, 1] (open_below) or in [0, 1]."""

    def parse(text: str) -> float:
        value = _number(text, whole=False)
        if not (0 < value <= 1 if open_below else 0 <= value <= 1):
            span = "(0, 1]" if open_below else "[0, 1]"
            raise argparse.ArgumentTypeError(f"{text}: must be a number in {span}")
        return value

    return parse


def shapes_parser() -> argparse.ArgumentParser:
    """`python -m t2i.data.shapes`'s arguments (here, so that they are checked before torch
    loads)."""
    parser = OneLineParser(prog="python -m t2i.data.shapes")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write an image folder with metadata.jsonl")
    ex.add_argument("dir", help="the folder to write (new or empty)")
    ex.add_argument("--n", type=at_least(1), required=True, help="images to write")
    ex.add_argument("--seed", type=int, default=0, help="the world's seed (default 0)")
    ex.add_argument(
        "--size", type=at_least(16), default=32, help="image side in pixels (default 32)"
    )
    ex.add_argument(
        "--num-objects",
        type=int,
        choices=[1, 2],
        default=None,
        help="objects per image (default: a mix of one and two)",
    )
    ex.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export in the folder"
    )
    return parser


def check_export_dir(out: Path, overwrite: bool) -> bool:
    """Whether `out` holds an earlier shapes export to clear first; a ValueError when it is a
    file, holds one without `overwrite`, or holds files that no export wrote."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; give a folder to export into")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not (out / "metadata.jsonl").is_file():
        raise ValueError(f"{out}: holds files that are not a shapes export; choose a new folder")
    if not overwrite:
        raise ValueError(f"{out}: holds an earlier export; choose a new folder or pass --overwrite")
    return True


def precheck_shapes(argv: list[str]) -> None:
    """Refuse a bad `python -m t2i.data.shapes` command line, or an export folder it may not
    write, in a one-line error (exit 2) before the heavy imports."""
    args = shapes_parser().parse_args(argv)
    try:
        check_export_dir(Path(args.dir), args.overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def train_parser(description: str | None = None) -> argparse.ArgumentParser:
    """`python -m t2i.train`'s arguments (here, so that they are checked before torch loads)."""
    parser = OneLineParser(
        prog="python -m t2i.train",
        allow_abbrev=False,  # a mistyped flag is an error, not another flag
        description=description,
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
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run train.output_dir holds (its checkpoints, logs, samples, model); "
        "without it a used train.output_dir is refused",
    )
    parser.add_argument(
        "--preset",
        nargs="?",
        const="",
        metavar="NAME",
        help="a recipe's resolution preset (model.preset); alone, list the recipe's presets",
    )
    return parser


def precheck_train(argv: list[str], description: str | None = None) -> None:
    """Refuse a bad `python -m t2i.train` command line in a one-line error (exit 2) before
    the heavy imports: its flags, a missing or unreadable config, a malformed override and,
    for a one-model config, an unknown or mistyped key. What needs the models or the data is
    checked after, by `t2i.train.main`."""
    from t2i.config import ConfigError, load_config, read_yaml
    from t2i.runs import check_fresh, check_overwrite, check_resume

    args = train_parser(description).parse_intermixed_args(argv)
    if args.preset == "":
        return  # listing presets: nothing to check
    try:
        data = read_yaml(args.config)
        model = data.get("model")
        kind = model.get("type") if isinstance(model, dict) else None
        if kind in ("recipe", "pipeline"):  # their own keys are checked later; paths now
            check_run_paths(data, args.overrides, kind, args.config)
        else:
            resume = [f"train.resume={args.resume}"] if args.resume is not None else []
            config = load_config(args.config, args.overrides + resume)
            # the run folder: a used one is not trained into afresh, nor resumed as another model
            if args.overwrite:
                check_overwrite(config, args.config)
            else:
                check_fresh(config, args.config)
                check_resume(config, args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def check_run_paths(data: dict, overrides: list[str], kind: str, source: str) -> None:
    """A recipe's or fine-tuning's data folder and starting pipeline, torch-free: a
    ConfigError naming the key and path when the data is not there (or is an empty folder),
    or `init_from` is no pipeline folder nor a shipped pipeline's name."""
    from t2i.config import ConfigError

    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    path = given.get("data.path", given.get("path", (data.get("data") or {}).get("path")))
    if path and any(c in str(path) for c in "*?["):  # WebDataset shards by pattern
        if not glob.glob(str(path)):
            raise ConfigError(f"{source}: data.path={str(path)!r}: the pattern matches no file")
    elif path:
        folder = Path(str(path))
        if not folder.exists():
            raise ConfigError(f"{source}: data.path={str(path)!r}: no such file or folder")
        if folder.is_dir() and not any(folder.iterdir()):
            raise ConfigError(f"{source}: data.path={str(path)!r}: an empty folder")
    init = given.get("init_from", data.get("init_from"))
    if kind == "pipeline" and init and not pipeline_path(str(init)).is_dir():
        raise ConfigError(
            f"{source}: init_from={str(init)!r}: no such pipeline folder, nor a shipped "
            f"pipeline ({', '.join(shipped())})"
        )


def check_eval_paths(
    model: str | None,
    data: str | None = None,
    split: str | None = None,
    eval_clip: str | None = None,
    lora: str | None = None,
    grids: str | None = None,
) -> None:
    """The paths of an evaluate command line, torch-free: each one named when it is not there
    (or, for --grids, when it is: a new folder)."""
    if model is not None and not pipeline_path(model).exists():
        raise FileNotFoundError(
            f"MODEL {model}: no such folder, nor a shipped pipeline ({', '.join(shipped())})"
        )
    if model is not None:  # a LoRA adapter folder is named as one
        check_model(model, "MODEL")
        path = pipeline_path(model)
        if (
            not any((path / f).is_file() for f in ("model_index.json", "config.json"))
            and not (path / "model" / "config.json").is_file()
        ):
            raise FileNotFoundError(
                f"MODEL {model}: no model_index.json, config.json or model/config.json; not "
                "a saved pipeline, model or run"
            )
    if data is not None and not Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    if split is not None and not Path(split).is_file():
        raise FileNotFoundError(f"--split {split}: no such file")
    if split is not None:
        try:
            read_split(split)
        except ValueError as err:
            raise ValueError(f"--split {err}") from None
    if eval_clip is not None and not Path(eval_clip).exists():
        raise FileNotFoundError(f"--eval-clip {eval_clip}: no such folder")
    if lora is not None:
        read_lora_config(lora)
    if grids is not None and Path(grids).exists():
        raise ValueError(f"--grids {grids}: exists; choose a new folder")


def evaluate_number_flags(parser: argparse.ArgumentParser) -> None:
    """evaluate's flags whose values are checked by type or choice (shared by its parser and
    the torch-free precheck)."""
    parser.add_argument("--suite", choices=["shapes", "captioned"], default="shapes")
    parser.add_argument(
        "--n",
        type=at_least(1),
        default=1000,
        help="test images per measurement (--suite captioned: captions per part)",
    )
    parser.add_argument("--batch-size", type=at_least(1), default=100)
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument(
        "--images-per-prompt",
        type=at_least(1),
        default=4,
        help="a pipeline's images per test prompt",
    )
    parser.add_argument(
        "--eval-clip-steps",
        type=at_least(1),
        metavar="N",
        help="the evaluation CLIP's training steps",
    )


def precheck_evaluate(argv: list[str]) -> None:
    """Refuse, before evaluate's heavy imports, a command line whose paths, numbers or suite
    are wrong (one line, exit 2); the rest is checked by `t2i.evaluate.main`."""
    parser = OneLineParser(prog="python -m t2i.evaluate", add_help=False)
    parser.add_argument("model", nargs="?")
    for flag in ("--data", "--split", "--eval-clip", "--lora", "--grids"):
        parser.add_argument(flag)
    evaluate_number_flags(parser)
    args, _ = parser.parse_known_args(argv)
    try:
        check_eval_paths(args.model, args.data, args.split, args.eval_clip, args.lora, args.grids)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def default_route(index: dict) -> str:
    """The route a saved pipeline draws by when none is named: DALL-E when it has it, else
    its first (from its model_index.json's `_t2i_routes`; DALL-E for pipelines saved before
    they were recorded, which all had it).

    Args:
        index: the pipeline's model_index.json, parsed.
    """
    routes = index.get("_t2i_routes") or ["dalle"]
    return "dalle" if "dalle" in routes else routes[0]


ASSETS = Path(__file__).resolve().parent / "assets"  # the shipped pipelines, one folder each


def shipped() -> list[str]:
    """The names of the pipelines shipped in t2i/assets ("default", "emoji")."""
    return sorted(p.name for p in ASSETS.iterdir() if (p / "model_index.json").is_file())


def pipeline_path(model: str | Path | None) -> Path:
    """A saved pipeline's folder: a path as given; the name of a shipped pipeline (no such
    path here) its folder in t2i/assets; None the shipped default.

    Args:
        model: a folder, a shipped pipeline's name, or None.
    """
    if model is None:
        return ASSETS / "default"
    path = Path(model)
    if not path.exists() and str(model) in shipped():
        return ASSETS / str(model)
    return path


def check_model(model: str | Path | None, flag: str = "--model", pipeline: bool = False) -> None:
    """A FileNotFoundError naming `flag` unless `model` is a folder or a shipped pipeline
    (with `pipeline`, one holding model_index.json); a ValueError for a LoRA adapter folder
    (it goes to --lora, beside its base)."""
    if model is not None and not pipeline_path(model).is_dir():
        raise FileNotFoundError(
            f"{flag} {model}: no such directory, nor a shipped pipeline ({', '.join(shipped())})"
        )
    path = pipeline_path(model)
    if (path / LORA_CONFIG).is_file() and not (path / "model_index.json").is_file():
        base = read_lora_config(path, flag).get("base_pipeline", "its base pipeline")
        raise ValueError(
            f"{flag} {model}: a folder of LoRA adapters, not a pipeline; draw with their "
            f"base, {base}, and --lora {model}"
        )
    if pipeline and model is not None and not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{flag} {model}: no model_index.json; not a saved pipeline")


def read_lora_config(folder: str | Path, flag: str = "--lora") -> dict:
    """A LoRA adapter folder's lora_config.json, read without torch; a one-line error naming
    `flag` for a missing folder or file, or one that is not JSON."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {folder}: no such directory")
    config = path / LORA_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{flag} {folder}: no {LORA_CONFIG}; not a LoRA adapter folder")
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{flag} {folder}: {LORA_CONFIG} is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {folder}: {LORA_CONFIG} is not a mapping")
    return data
