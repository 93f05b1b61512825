"""The data sets a training config names (the shapes world or a user's captioned images),
and `inspect`, which reads one once."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from t2i.cli import read_split
from t2i.data.captioned import (
    HELDOUT_FILE,
    CaptionedDataset,
    detect_format,
    relative_source,
    summarize,
)
from t2i.data.images import BadImageError, load_image
from t2i.data.shapes import ShapesDataset
from t2i.data.webdataset import WebDatasetShards

logger = logging.getLogger(__name__)


def build_datasets(data: Any, captions: bool = True) -> tuple[Dataset, Dataset]:
    """The training set and a disjoint validation set, for grids and evaluation: the shapes
    world (validation: data seed + 1) or a seeded split of a captioned data set.

    Args:
        data: the data section (`t2i.config.DataConfig`).
        captions: whether the model reads captions (False: a folder of images without
            captions will do).

    Raises:
        ValueError: an unknown data set, or a captioned data set that cannot be read
            (naming the field).
    """
    if data.path is not None or data.dataset == "captioned":
        return captioned_datasets(data, captions)
    if data.dataset != "shapes":
        raise ValueError(
            f"data.dataset={data.dataset!r} is not known; use 'shapes', or set "
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


def split_file(data: Any) -> Path | None:
    """The held-out split file `data.heldout` names (see `DataConfig`), or None for a seeded
    draw of `data.num_val` samples.

    Raises:
        ValueError: a named file that does not exist.
    """
    if data.heldout is None or not data.path:
        return None
    if data.heldout == "auto":
        found = Path(data.path) / HELDOUT_FILE
        return found if Path(data.path).is_dir() and found.is_file() else None
    if not Path(data.heldout).is_file():
        raise ValueError(f"data.heldout={data.heldout!r}: no such file")
    return Path(data.heldout)


def split_captioned(
    full: CaptionedDataset, data: Any
) -> tuple[CaptionedDataset, CaptionedDataset, dict[str, Any] | None]:
    """(train, held-out, the split file's record) of a captioned data set: the split file's
    when there is one (see `split_file`; its record `read_split`'s, with `file`), else
    `num_val` samples drawn with `seed` (and None)."""
    path = split_file(data)
    if path is None:
        return (*full.split(data.num_val, data.seed), None)
    written = read_split(path)
    record = {"held_out": written["held_out"], "parts": written["parts"], "file": str(path)}
    return (*full.listed_split(record["held_out"], str(path)), record)


def split_record(full: CaptionedDataset, data: Any) -> dict[str, Any]:
    """What a pipeline records of the data set it was trained on (its heldout.json): the
    data path, seed and num_val, the held-out sources relative to the data folder
    (`held_out`), and, when a split file decided them, that file (`split_file`) and its
    named parts (`parts`).

    Args:
        full: the whole data set.
        data: its config (`path`, `seed`, `num_val`, `heldout`: a DataConfig).
    """
    _, val, record = split_captioned(full, data)
    root = Path(data.path).resolve()
    split = {"data_path": str(data.path), "seed": data.seed, "num_val": data.num_val}
    split["held_out"] = [relative_source(r["source"], root) for r in val.records]
    if record is not None:
        split.update(split_file=record["file"], parts=record["parts"])
    return split


def captioned_datasets(data: Any, captions: bool = True) -> tuple[Dataset, Dataset]:
    """A user's captioned data set at `data.path`, split into training and validation
    (`captions=False`: its images, captioned or not)."""
    if not data.path:
        raise ValueError("data.dataset=captioned needs data.path")
    try:
        if detect_format(data.path) == "webdataset":
            stream = WebDatasetShards(
                data.path, data.image_size, data.caption_column, data.random_crop, seed=data.seed
            )
            return stream.split(data.num_val)
        full = CaptionedDataset(
            data.path,
            data.image_size,
            data.caption_column,
            data.image_column,
            data.random_crop,
            captions=captions,
        )
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"data.path={data.path!r}: {err}") from err
    if data.check_images:
        report = full.check_all()
        if report["count"]:
            logger.warning(
                "%s: %d bad samples will be skipped (listed at the end)", data.path, report["count"]
            )
    train_set, val_set, _ = split_captioned(full, data)
    logger.info(
        "%s: %d training and %d validation samples (%s)",
        data.path,
        len(train_set),
        len(val_set),
        full.format,
    )
    return train_set, val_set


def bad_samples(dataset: Dataset) -> dict[str, Any]:
    """What a captioned data set skipped while training read it ({} for the shapes world)."""
    return dataset.report() if isinstance(dataset, (CaptionedDataset, WebDatasetShards)) else {}


def inspect(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Read every sample of a data set once: counts, image sizes, caption lengths, bad files.

    Args:
        path: the data set.
        kwargs: `CaptionedDataset` arguments (caption_column, image_column).
    """
    if detect_format(path) == "webdataset":
        return WebDatasetShards(path, caption_column=kwargs.get("caption_column")).inspect()
    data = CaptionedDataset(path, **kwargs)
    sizes: Counter = Counter()
    for record in data.records:
        try:
            if record["image"] is None:
                raise BadImageError("no image given")
            image = load_image(record["image"], data.background)
        except (BadImageError, OSError) as err:
            data._report(record["source"], str(err))
            continue
        sizes[f"{image.width}x{image.height}"] += 1
    words = [len(c.split()) for r in data.records for c in r["caption"]]
    samples = len(data.records) + sum(1 for s in data.bad if "caption" in data.bad[s])
    return summarize(data.path, data.format, samples, sizes, words, data.report())
