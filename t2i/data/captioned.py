"""Users' captioned image data sets: `CaptionedDataset(path)` detects the layout and reads it.

Layouts (`detect_format`):
- "imagefolder": a folder with `metadata.jsonl` (diffusers / `datasets` imagefolder: one JSON
  object per line with `file_name` and a caption column), as `python -m t2i.data.shapes
  export` writes it;
- "text_pairs": a folder (nested folders included) of images with same-name `.txt` captions
  (the DALLE-pytorch convention);
- "table": a CSV, TSV or Parquet file with an image path column (relative to the file's
  folder) and a caption column, read with `datasets`;
- "saved": a `datasets` directory written by `save_to_disk`, with an image column (an
  `Image` feature, or paths) and a caption column;
- "webdataset": .tar shards (a file, a folder of them, or a glob), streamed by
  `t2i.data.webdataset.WebDatasetShards` for data sets larger than a disk's worth of loose
  files.
A caption may be a list of captions; each time the image is drawn, one is picked at random.
Each sample's record (`records`: image, caption, spec, source, meta) keeps in `meta` an
imagefolder row's other plain fields (`style`, `name` ...; {} in the other layouts), for the
evaluation to group samples by.

Nothing bad stops a run: a sample without a caption is left out when the set is built; a
missing, empty, truncated or unreadable image, a file that is not an image, or a
decompression bomb is skipped when it is first read (the next sample takes its place). Each
is logged once with its file and reason and kept in `bad` (`report()` sums them up).
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import json
import logging
import os
import random
import tempfile
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from t2i.config import read_text
from t2i.data.images import IMAGE_EXTENSIONS, BadImageError, fit, load_image
from t2i.data.shapes import to_tensor

logger = logging.getLogger(__name__)

FORMATS = ("imagefolder", "text_pairs", "table", "saved", "webdataset", "images")
CAPTION_COLUMNS = ("caption", "text", "captions", "prompt")
IMAGE_COLUMNS = ("file_name", "image", "image_path", "path", "filename")
TABLE_LOADERS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
HELDOUT_FILE = "heldout.json"  # a split: {"held_out": [sources], "parts": {name: [sources]}}


def relative_source(source: str, root: Path) -> str:
    """A record's source relative to the data folder (as heldout.json lists it), else as is."""
    try:
        return str(Path(source).resolve().relative_to(root))
    except ValueError:
        return source


def check_utf8(path: Path, block: int = 1 << 20) -> None:
    """A ValueError naming a text file (a caption table) and the offset of its first byte
    that is not UTF-8; read in blocks, so a large table is never held whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the block's first byte in the file
    with path.open("rb") as f:
        while True:
            data = f.read(block)
            pending = len(decoder.getstate()[0])  # a character's first bytes, carried over
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:  # err.object: the carried bytes, then the block
                raise ValueError(
                    f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                    f"{offset - pending + err.start}); save it as UTF-8"
                ) from None
            if not data:
                return
            offset += len(data)


def detect_format(path: str | Path) -> str:
    """Which layout `path` holds (see the module docstring); a ValueError naming what was
    looked for when it is none of them."""
    if any(c in str(path) for c in "*?[") or str(path).endswith(".tar"):
        return "webdataset"
    path = Path(path)
    if path.is_file() and path.suffix.lower() in TABLE_LOADERS:
        return "table"
    if path.is_dir():
        if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
            return "saved"
        if (path / "metadata.jsonl").is_file():
            return "imagefolder"
        if any(path.glob("*.tar")):
            return "webdataset"
        if any(p.suffix == ".txt" for p in path.rglob("*.txt")):
            return "text_pairs"
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*")):
            return "images"  # no captions: an image tokenizer or autoencoder trains on it
        if not any(path.iterdir()):
            raise ValueError(f"{path}: an empty folder (no images, no captions)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    raise ValueError(
        f"{path}: not a captioned data set t2i reads: expected a folder with metadata.jsonl, a "
        "folder of images with same-name .txt captions, a .csv/.tsv/.parquet file, or a "
        "datasets save_to_disk folder"
    )


def _pick(
    columns: list[str], wanted: str | None, choices: tuple[str, ...], what: str, where: Path
) -> str:
    """The column to use: `wanted`, else the first of `choices` present; an error naming both."""
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{where}: no {what} column {wanted!r}; columns: {columns}")
        return wanted
    for name in choices:
        if name in columns:
            return name
    raise ValueError(
        f"{where}: no {what} column (looked for {', '.join(choices)}); columns: {columns}; "
        f"name it with data.{what}_column"
    )


def _meta(row: dict, used: tuple[str, ...]) -> dict[str, Any]:
    """An imagefolder row's plain fields (str, number, bool or null: `style`, `name` ...)
    other than its `used` caption and image columns, kept in its record's `meta`; lists and
    objects (caption lists, `spec`) are left out."""
    plain = (str, int, float, bool)
    return {k: v for k, v in row.items() if k not in used and (v is None or isinstance(v, plain))}


class BadSamples(dict):
    """source -> reason of the samples a data set skipped, shared with its DataLoader worker
    processes: a worker that finds a bad sample records it here in its own copy and also
    appends it to a log file, which `merged()` in the main process reads back, so that the
    count at the end of a run includes what the workers skipped."""

    def __init__(self) -> None:
        super().__init__()
        fd, self.log = tempfile.mkstemp(prefix="t2i-bad-samples-", suffix=".jsonl")
        os.close(fd)
        weakref.finalize(self, _remove_log, self.log, os.getpid())

    def __setitem__(self, source: str, reason: str) -> None:
        if source not in self:
            with open(self.log, "a", encoding="utf-8") as f:  # one short append per line
                f.write(json.dumps([source, reason]) + "\n")
        super().__setitem__(source, reason)

    def __reduce__(self):  # a copy for a spawned worker: the same log, no second finalizer
        return (_attach, (self.log, dict(self)))

    def merged(self) -> dict[str, str]:
        """Every bad sample any process of this data set recorded, in the order found (each
        entry is in the log, which every process appends to)."""
        try:
            lines = Path(self.log).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:  # its owner is gone: what this copy knows
            return dict(self)
        found: dict[str, str] = {}
        for line in lines:
            source, reason = json.loads(line)
            found.setdefault(source, reason)
        return found


def _remove_log(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked worker's copy
        Path(path).unlink(missing_ok=True)


def _attach(log: str, entries: dict) -> BadSamples:
    bad = BadSamples.__new__(BadSamples)
    dict.__init__(bad, entries)
    bad.log = log
    return bad


class CaptionedDataset(Dataset):
    """A user's captioned images as training samples: `pixel_values` (3, S, S) in [-1, 1]
    and `caption` (and `spec` when the metadata gives every sample one).

    Args:
        path: the data set (any layout of `detect_format`).
        image_size: the side S images are resized and cropped to.
        caption_column: the caption column (default: the first of caption, text, captions,
            prompt).
        image_column: the image column (default: the first of file_name, image, image_path,
            path, filename).
        random_crop: crop at random offsets (else the centre).
        background: the colour transparent pixels are composited on.
        captions: whether its samples need captions (False for a model that reads images
            alone, an image tokenizer or autoencoder: a folder of images without captions
            is then a data set, and a sample's caption is kept when it has one).
    """

    def __init__(
        self,
        path: str | Path,
        image_size: int = 32,
        caption_column: str | None = None,
        image_column: str | None = None,
        random_crop: bool = False,
        background: tuple[int, int, int] = (255, 255, 255),
        captions: bool = True,
    ) -> None:
        self.path, self.image_size = Path(path), image_size
        self.random_crop, self.background = random_crop, tuple(background)
        self.format = detect_format(self.path)
        if self.format == "webdataset":
            raise ValueError(f"{self.path}: WebDataset shards are streamed; use WebDatasetShards")
        self.bad = BadSamples()  # source -> reason, workers' finds included
        records = getattr(self, f"_read_{self.format}")(caption_column, image_column)
        if self.format == "images" and captions:
            raise ValueError(
                f"{self.path}: {len(records)} images but no captions (no metadata.jsonl, no "
                "same-name .txt files); give each image a caption, or train only an image "
                "tokenizer or autoencoder on it (they read images alone)"
            )
        self.captions = captions
        self.records = [r for r in records if self._has_caption(r, required=captions)]
        if not self.records:
            raise ValueError(f"{self.path}: no usable samples ({len(self.bad)} bad)")
        self.has_spec = all(r["spec"] is not None for r in self.records)  # shapes exports

    # ---- reading the layouts ---------------------------------------------------------------

    def _read_imagefolder(self, caption_column: str | None, image_column: str | None) -> list:
        meta = self.path / "metadata.jsonl"
        rows = self._metadata_rows(meta)
        if not rows:
            raise ValueError(f"{meta}: no readable row ({len(self.bad)} bad lines)")
        columns = sorted({k for r in rows for k in r})
        cap = _pick(columns, caption_column, CAPTION_COLUMNS, "caption", meta)
        img = _pick(columns, image_column, IMAGE_COLUMNS, "image", meta)
        return [
            self._record(
                self.path / str(r.get(img)), r.get(cap), r.get("spec"), meta=_meta(r, (cap, img))
            )
            for r in rows
        ]

    def _metadata_rows(self, meta: Path) -> list[dict]:
        """metadata.jsonl's rows; a line that is not a JSON object is a bad sample, named by
        its file and line (the rest are read), never the end of the data set."""
        rows = []
        for number, line in enumerate(read_text(meta).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                self._report(f"{meta}:{number}", f"not JSON ({err.msg}, column {err.colno})")
                continue
            if not isinstance(row, dict):
                self._report(f"{meta}:{number}", f"a JSON {type(row).__name__}, not an object")
                continue
            rows.append(row)
        return rows

    def _read_text_pairs(self, caption_column: str | None, image_column: str | None) -> list:
        images = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        records = []
        for image in images:
            text = image.with_suffix(".txt")
            try:
                caption = read_text(text).strip() if text.is_file() else None
            except ValueError as err:
                self._report(str(image), str(err).removeprefix(f"{text}: ") + f" ({text.name})")
                continue
            lines = [line.strip() for line in (caption or "").splitlines() if line.strip()]
            records.append(self._record(image, lines if len(lines) > 1 else caption))
        return records

    def _read_images(self, caption_column: str | None, image_column: str | None) -> list:
        images = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        return [self._record(image, None) for image in images]

    def _read_table(self, caption_column: str | None, image_column: str | None) -> list:
        loader = TABLE_LOADERS[self.path.suffix.lower()]
        kwargs = {"delimiter": "\t"} if self.path.suffix.lower() == ".tsv" else {}
        if loader == "csv":
            check_utf8(self.path)  # pandas would stop on a Latin-1 byte with a traceback
        try:
            table = datasets.load_dataset(
                loader, data_files=str(self.path), split="train", **kwargs
            )
        except datasets.exceptions.DatasetGenerationError as err:
            cause = err.__cause__ or err
            reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            raise ValueError(f"{self.path}: not a table that reads ({reason})") from None
        return self._rows(table, caption_column, image_column, self.path.parent)

    def _read_saved(self, caption_column: str | None, image_column: str | None) -> list:
        try:
            table = datasets.load_from_disk(str(self.path))
        except (OSError, ValueError, pyarrow.ArrowException) as err:  # a damaged save
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"{self.path}: a save_to_disk folder that does not load ({reason})"
            ) from None
        return self._rows(table, caption_column, image_column, self.path)

    def _rows(
        self,
        table: datasets.Dataset,
        caption_column: str | None,
        image_column: str | None,
        root: Path,
    ) -> list:
        """Records of a `datasets` table: image paths relative to `root`, or stored bytes."""
        cap = _pick(table.column_names, caption_column, CAPTION_COLUMNS, "caption", self.path)
        img = _pick(table.column_names, image_column, IMAGE_COLUMNS, "image", self.path)
        if isinstance(table.features[img], datasets.Image):
            table = table.cast_column(img, datasets.Image(decode=False))
        records = []
        for i, row in enumerate(table):
            value = row[img]
            if isinstance(value, dict):  # an Image feature: bytes, or a path
                image = value.get("bytes") or value.get("path")
                source = value.get("path") or f"{self.path}[{i}]"
            else:
                image = source = root / str(value) if value is not None else None
            records.append(self._record(image, row[cap], row.get("spec"), str(source)))
        return records

    def _record(
        self,
        image: Any,
        caption: Any,
        spec: Any = None,
        source: str | None = None,
        meta: dict | None = None,
    ) -> dict:
        """A sample's record: `meta` holds its metadata row's plain fields (see `_meta`)."""
        source = source or str(image)
        return {
            "image": image,
            "caption": caption,
            "spec": spec,
            "source": source,
            "meta": meta or {},
        }

    def _has_caption(self, record: dict, required: bool = True) -> bool:
        """Keep records with a non-empty caption (or list of them), or (not required) every
        record; report those left out."""
        caption = record["caption"]
        captions = caption if isinstance(caption, list) else [caption]
        odd = next((c for c in captions if c is not None and not isinstance(c, str)), None)
        if odd is not None and not required:  # an image-only model: the caption is not read
            record["caption"] = None
            return True
        if odd is not None:  # a number or a mapping where text belongs: named, not read as ""
            self._report(record["source"], f"caption {odd!r} ({type(odd).__name__}) is not text")
            return False
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if not captions and not required:
            record["caption"] = None
            return True
        if not captions:
            reason = "no caption" if caption is None else "empty caption"
            self._report(record["source"], reason)
            return False
        record["caption"] = captions
        return True

    # ---- splits and identity ---------------------------------------------------------------

    def split(self, num_val: int, seed: int = 0) -> tuple[CaptionedDataset, CaptionedDataset]:
        """A seeded (train, validation) split; validation gets num_val samples (at most a tenth).

        Args:
            num_val: validation samples wanted.
            seed: seeds the shuffle.
        """
        order = torch.randperm(len(self.records), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, min(num_val, len(self.records) // 10))
        return self._subset(order[n_val:].tolist(), "train"), self._subset(
            order[:n_val].tolist(), "val"
        )

    def listed_split(
        self, listed: Sequence[str], where: str
    ) -> tuple[CaptionedDataset, CaptionedDataset]:
        """(train, held-out): the records whose source, relative to the data folder, is
        listed are held out, every other one trains.

        Args:
            listed: sources relative to the data folder (a heldout.json's `held_out`).
            where: the list's file, named in errors.

        Raises:
            ValueError: it lists none of this data set's samples, or every one.
        """
        root, wanted = self.path.resolve(), set(listed)
        held = [
            i for i, r in enumerate(self.records) if relative_source(r["source"], root) in wanted
        ]
        if not held or len(held) == len(self.records):
            which = "none" if not held else "every one"
            raise ValueError(
                f"{where} lists {which} of the {len(self.records)} samples of {self.path}"
            )
        chosen = set(held)
        rest = [i for i in range(len(self.records)) if i not in chosen]
        return self._subset(rest, "train"), self._subset(held, "val")

    def _subset(self, indices: list[int], name: str) -> CaptionedDataset:
        part = copy.copy(self)
        part.records = [self.records[i] for i in sorted(indices)]
        part.part = name
        return part

    @property
    def description(self) -> dict[str, Any]:
        """What fixes the samples (for the token cache's keys): the data set, its files'
        modification times, this part's samples and the image settings."""
        stamp = hashlib.sha256("\n".join(r["source"] for r in self.records).encode()).hexdigest()
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "modified": max(p.stat().st_mtime for p in [self.path, *self.path.glob("*")]),
            "samples": len(self.records),
            "sources": stamp,
            "image_size": self.image_size,
            "random_crop": self.random_crop,
            "background": list(self.background),
            "part": getattr(self, "part", "all"),
        }

    # ---- samples ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample `index`, or the next readable one when its image is bad."""
        for k in range(len(self.records)):
            record = self.records[(index + k) % len(self.records)]
            if record["source"] in self.bad:
                continue
            try:
                return self._sample(record)
            except (BadImageError, OSError) as err:
                self._report(record["source"], str(err))
        raise RuntimeError(f"{self.path}: no readable image among {len(self.records)} samples")

    def _sample(self, record: dict) -> dict[str, Any]:
        image = record["image"]
        if image is None:
            raise BadImageError("no image given")
        if not isinstance(image, bytes) and not Path(image).is_file():
            raise BadImageError("file not found")
        picture = fit(load_image(image, self.background), self.image_size, self.random_crop)
        captions = record["caption"]
        sample = {"pixel_values": to_tensor(picture)}
        if self.captions:  # else images alone, captioned or not, alike in every batch
            sample["caption"] = captions[0] if len(captions) == 1 else random.choice(captions)
        if self.has_spec:
            sample["spec"] = record["spec"]
        return sample

    # ---- reporting -------------------------------------------------------------------------

    def _report(self, source: str, reason: str) -> None:
        if source not in self.bad:
            self.bad[source] = reason
            logger.warning("skipping %s: %s", source, reason)

    def report(self) -> dict[str, Any]:
        """What was skipped so far: {"bad": {source: reason}, "count": n, "reasons": {...}}."""
        bad = self.bad.merged()
        reasons = Counter(r.split(":")[0] for r in bad.values())
        return {"bad": bad, "count": len(bad), "reasons": dict(reasons)}

    def check_all(self) -> dict[str, Any]:
        """Read every image once (to find all bad files up front); return `report()`."""
        for record in tqdm(self.records, desc="checking images", unit="img", leave=False):
            if record["source"] not in self.bad:
                try:
                    self._sample(record)
                except (BadImageError, OSError) as err:
                    self._report(record["source"], str(err))
        return self.report()


def summarize(
    path: Any, fmt: str, samples: int, sizes: Counter, words: list[int], report: dict
) -> dict[str, Any]:
    """The report `python -m t2i.data inspect` prints."""
    return {
        "path": str(path),
        "format": fmt,
        "samples": samples,
        "readable": sum(sizes.values()),
        "image_sizes": dict(sizes.most_common()),
        "caption_words": {
            "min": min(words, default=0),
            "mean": round(sum(words) / max(len(words), 1), 2),
            "max": max(words, default=0),
        },
        **report,
    }
