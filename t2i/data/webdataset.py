"""WebDataset tar shards as a captioned data set, streamed: for data sets larger than a
disk's worth of loose files (`t2i.data.captioned` has the other formats)."""

from __future__ import annotations

import copy
import glob
import hashlib
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
from torch.utils.data import Dataset, IterableDataset

from t2i.data.captioned import BadSamples, summarize
from t2i.data.images import IMAGE_EXTENSIONS, BadImageError, fit, load_image
from t2i.data.shapes import to_tensor

logger = logging.getLogger(__name__)


def shard_files(path: str | Path) -> list[str]:
    """The .tar shards a path names: a .tar file, a folder of them, or a glob pattern."""
    text = str(path)
    if any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
    elif Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).glob("*.tar"))
    else:
        files = [text] if Path(text).is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no WebDataset .tar shards")
    return files


def shard_damage(file: str | Path) -> str | None:
    """What is wrong with a .tar shard's end, read without scanning it (None: it ends as a
    whole tar does, in 512-byte blocks closed by two zero blocks). A shard cut short by a
    failed copy or a full disk streams its first samples and loses the rest in silence."""
    size = Path(file).stat().st_size
    if size % 512:
        return f"truncated: {size} bytes, not whole 512-byte tar blocks; its last samples are lost"
    with open(file, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    if size < 1024 or any(tail):
        return "truncated: no end-of-archive blocks; its last samples are lost"
    return None


class WebDatasetShards(IterableDataset):
    """WebDataset tar shards streamed through `datasets` (nothing is unpacked to disk): the
    files of one sample share a key, the image under its extension (png, jpg, ...) and the
    caption in a .txt (or a field of a .json). Shards are split among DataLoader workers and
    shuffled with a seeded buffer, anew each epoch; bad samples are reported and skipped.

    Args:
        path: a .tar file, a folder of .tar shards, or a glob pattern ("data/shard-*.tar").
        image_size: the side S images are resized and cropped to.
        caption_column: "txt" (default), or a field of the samples' .json.
        random_crop: crop at random offsets (else the centre).
        background: the colour transparent pixels are composited on.
        shuffle_buffer: samples in the shuffle buffer (0: stream order).
        seed: seeds the shuffle.
        skip_keys: sample keys left out (those taken for validation).
    """

    def __init__(
        self,
        path: str | Path,
        image_size: int = 32,
        caption_column: str | None = None,
        random_crop: bool = False,
        background: tuple[int, int, int] = (255, 255, 255),
        shuffle_buffer: int = 1000,
        seed: int = 0,
        skip_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.path, self.files = str(path), shard_files(path)
        self.skip_keys = frozenset(skip_keys)
        self.image_size, self.random_crop, self.background = image_size, random_crop, background
        self.caption_column = caption_column or "txt"
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self.bad = BadSamples()  # source -> reason, workers' finds included
        for file in self.files:  # a damaged shard still gives its first samples: named
            reason = shard_damage(file)
            if reason is not None:
                self.bad[file] = reason
                logger.warning("%s: %s", file, reason)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for this epoch (the trainer calls it)."""
        self.epoch = epoch

    def _stream(self) -> datasets.IterableDataset:
        stream = datasets.load_dataset(
            "webdataset", data_files={"train": self.files}, split="train", streaming=True
        )
        for name, feature in stream.features.items():
            if isinstance(feature, datasets.Image):
                stream = stream.cast_column(name, datasets.Image(decode=False))
        if self.shuffle_buffer:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            stream.set_epoch(self.epoch)
        return stream

    def __iter__(self):
        for row in self._stream():
            if row.get("__key__") in self.skip_keys:
                continue
            source = f"{row.get('__url__')}:{row.get('__key__')}"
            try:
                yield self._sample(row)
            except (BadImageError, OSError) as err:
                if source not in self.bad:
                    self.bad[source] = str(err)
                    logger.warning("skipping %s: %s", source, err)

    def _sample(self, row: dict) -> dict[str, Any]:
        image = next((row[k] for k in row if k.lower() in _IMAGE_KEYS and row[k]), None)
        if image is None:
            raise BadImageError("no image in the sample")
        caption = self._caption(row)
        picture = load_image(image["bytes"] if isinstance(image, dict) else image, self.background)
        picture = fit(picture, self.image_size, self.random_crop)
        return {"pixel_values": to_tensor(picture), "caption": caption}

    def _caption(self, row: dict) -> str:
        if self.caption_column in row:
            caption = row[self.caption_column]
        else:
            caption = (row.get("json") or {}).get(self.caption_column)
        captions = caption if isinstance(caption, list) else [caption]
        captions = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
        if not captions:
            raise BadImageError("no caption" if caption is None else "empty caption")
        return random.choice(captions)

    def report(self) -> dict[str, Any]:
        """What was skipped so far, by this process and its DataLoader workers."""
        bad = self.bad.merged()
        return {"bad": bad, "count": len(bad)}

    @property
    def description(self) -> dict[str, Any]:
        """What fixes the samples (for the token cache's keys): the shards and their
        modification times, the samples left out and the image settings."""
        skipped = hashlib.sha256("\n".join(sorted(self.skip_keys)).encode()).hexdigest()
        return {
            "shards": [str(Path(f).resolve()) for f in self.files],
            "modified": max(Path(f).stat().st_mtime for f in self.files),
            "skip_keys": skipped,
            "image_size": self.image_size,
            "random_crop": self.random_crop,
            "background": list(self.background),
            "caption_column": self.caption_column,
        }

    def split(self, num_val: int) -> tuple[WebDatasetShards, SampleList]:
        """(a training stream without them, the first num_val readable samples in shard order)."""
        head = copy.copy(self)
        head.shuffle_buffer = 0
        val, keys = [], set()
        for row in head._stream():
            if len(val) >= num_val:
                break
            try:
                val.append(self._sample(row))
                keys.add(row["__key__"])
            except (BadImageError, OSError):
                continue
        train = copy.copy(self)
        train.skip_keys = frozenset(keys)
        return train, SampleList(val, {**self.description, "validation": sorted(keys)})

    def inspect(self) -> dict[str, Any]:
        """One pass over the shards: counts, image sizes, caption lengths, bad samples."""
        sizes: Counter = Counter()
        words, samples = [], 0
        head = copy.copy(self)
        head.shuffle_buffer = 0
        for row in head._stream():
            samples += 1
            source = f"{row.get('__url__')}:{row.get('__key__')}"
            try:
                caption = self._caption(row)
                image = next((row[k] for k in row if k.lower() in _IMAGE_KEYS and row[k]), None)
                if image is None:
                    raise BadImageError("no image in the sample")
                picture = load_image(image["bytes"], self.background)
            except (BadImageError, OSError) as err:
                if source not in self.bad:
                    self.bad[source] = str(err)
                continue
            sizes[f"{picture.width}x{picture.height}"] += 1
            words.append(len(caption.split()))
        return summarize(self.path, "webdataset", samples, sizes, words, self.report())


class SampleList(Dataset):
    """Samples held in memory (a stream's validation head), with a description for caches."""

    def __init__(self, samples: list[dict], description: dict[str, Any]) -> None:
        self.samples, self.description = samples, description

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


_IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
