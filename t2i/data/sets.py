"""The data sets a training config names: the shapes world or a user's captioned images."""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from t2i.data.captioned import CaptionedDataset, WebDatasetShards, detect_format
from t2i.data.shapes import ShapesDataset

logger = logging.getLogger(__name__)


def build_datasets(data: Any) -> tuple[Dataset, Dataset]:
    """The training set and a disjoint validation set, for grids and evaluation: the shapes
    world (validation: data seed + 1) or a seeded split of a captioned data set.

    Args:
        data: the data section (`t2i.config.DataConfig`).

    Raises:
        ValueError: an unknown data set, or a captioned data set that cannot be read
            (naming the field).
    """
    if data.path is not None or data.dataset == "captioned":
        return captioned_datasets(data)
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


def captioned_datasets(data: Any) -> tuple[Dataset, Dataset]:
    """A user's captioned data set at `data.path`, split into training and validation."""
    if not data.path:
        raise ValueError("data.dataset=captioned needs data.path")
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
        raise ValueError(f"data.path={data.path!r}: {err}") from err
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


def bad_samples(dataset: Dataset) -> dict[str, Any]:
    """What a captioned data set skipped while training read it ({} for the shapes world)."""
    return dataset.report() if isinstance(dataset, (CaptionedDataset, WebDatasetShards)) else {}
