"""A cache of image code grids, so that a prior trains on codes computed once.

A prior over codes (PixelCNN, the transformer prior) needs each training image as its
tokenizer's grid. Encoding every image at every step (as DALLE-pytorch does) spends most of
a step in the tokenizer; here the whole data set is encoded once and stored as a `datasets`
data set on disk, under a key that the caller derives from the tokenizer's weights and the
data set's description (`fingerprint`). A retrained tokenizer gives a new key, so its cache
is rebuilt, and the entry it replaces (same source, other key) is deleted.

This module knows no model: it takes an `encode` callable and a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored layout changes: old entries are then rebuilt
INFO_FILE = "t2i_token_cache.json"

Tokens = torch.Tensor | tuple[torch.Tensor, ...]


def fingerprint(tensors: Iterable[tuple[str, torch.Tensor]], *descriptions: Any) -> str:
    """A hex key over named tensors (a tokenizer's state dict) and JSON-able descriptions.

    Args:
        tensors: (name, tensor) pairs, e.g. `model.state_dict().items()`.
        *descriptions: anything else the codes depend on (the tokenizer config, the data set).
    """
    h = hashlib.sha256(f"t2i-token-cache-{FORMAT}".encode())
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(descriptions, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_description(model: Any) -> dict[str, Any]:
    """A saved model's config as a cache key part: without `_name_or_path`, which diffusers'
    `from_pretrained` sets to the folder it read, so that a moved or linked run still hits."""
    return {k: v for k, v in dict(model.config).items() if k != "_name_or_path"}


def _columns(tokens: Tokens) -> dict[str, np.ndarray]:
    """A batch of grids as named int32 arrays: `tokens` or `tokens_0`, `tokens_1`, ..."""
    if torch.is_tensor(tokens):
        return {"tokens": tokens.cpu().int().numpy()}
    return {f"tokens_{i}": t.cpu().int().numpy() for i, t in enumerate(tokens)}


def collate_images(samples: list[dict]) -> dict[str, Any]:
    """Stack pixel values; keep captions and specs as lists."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "spec": [json.dumps(s.get("spec")) for s in samples],
    }


@torch.no_grad()
def encode_dataset(
    dataset: Dataset,
    encode: Callable[[torch.Tensor], Tokens] | None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    extras: dict[str, Callable[[dict], torch.Tensor]] | None = None,
) -> datasets.Dataset:
    """Encode every image of a data set: a `datasets.Dataset` with caption, spec, grids and
    any extra columns.

    Args:
        dataset: yields dicts with `pixel_values` (3, H, W), `caption` and optionally `spec`.
        encode: images (N, 3, H, W) on `device` -> grids (N, h, w) or a tuple of them;
            None stores no grids (a cache of extras alone).
        batch_size: images per `encode` call.
        device: where the images go before `encode`.
        num_workers: DataLoader workers that render or read the images.
        extras: name -> batch (`pixel_values` on `device`, `caption`) -> float rows (N, D),
            stored as more columns (CLIP embeddings for the unCLIP stages).
    """
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers
    )
    parts: dict[str, list] = {"caption": [], "spec": []}
    for batch in tqdm(loader, desc="encoding images", unit="batch"):
        parts["caption"] += batch["caption"]
        parts["spec"] += batch["spec"]
        batch["pixel_values"] = batch["pixel_values"].to(device)
        if encode is not None:
            for name, array in _columns(encode(batch["pixel_values"])).items():
                parts.setdefault(name, []).append(array)
        for name, fn in (extras or {}).items():
            parts.setdefault(name, []).append(fn(batch).float().cpu().numpy())
    columns = {
        k: v if k in ("caption", "spec") else list(np.concatenate(v)) for k, v in parts.items()
    }
    return datasets.Dataset.from_dict(columns)


def cached_tokens(
    root: str | Path,
    key: str,
    source: str,
    build: Callable[[], datasets.Dataset],
) -> datasets.Dataset:
    """The cache entry `root/key`, built with `build()` and saved atomically if absent.

    Args:
        root: the cache folder.
        key: the entry's fingerprint.
        source: what the entry was made from (tokenizer path and data set, readable); a new
            entry deletes older entries of the same source.
        build: makes the data set when the entry is missing.
    """
    root = Path(root)
    entry = root / key
    if (entry / INFO_FILE).is_file():
        try:
            loaded = datasets.load_from_disk(str(entry))
            logger.info("token cache hit: %s", entry)
            return loaded
        except (OSError, ValueError, pyarrow.ArrowException) as err:  # derived: made again
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            logger.warning("token cache: %s is damaged (%s); encoding it again", entry, reason)
            shutil.rmtree(entry, ignore_errors=True)
    logger.info("token cache miss: encoding %s into %s", source, entry)
    data = build()
    tmp = root / f".tmp-{key}"
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    _drop_stale(root, source)
    (tmp / INFO_FILE).write_text(json.dumps({"key": key, "source": source, "format": FORMAT}))
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)
    return datasets.load_from_disk(str(entry))


def _drop_stale(root: Path, source: str) -> None:
    """Delete the entries made from the same source (their tokenizer or data have changed)."""
    for info in root.glob(f"*/{INFO_FILE}"):
        if json.loads(info.read_text()).get("source") == source:
            logger.info("token cache: dropping stale entry %s", info.parent)
            shutil.rmtree(info.parent, ignore_errors=True)


class TokenDataset(Dataset):
    """Cached grids as training samples: `image_tokens` (a (h, w) int64 grid, or a tuple of
    grids, coarsest first; absent from a cache without grids), `caption`, `spec` and any
    extra float column (`image_embeds`, `text_embeds`) as a float32 tensor.

    Args:
        data: a data set made by `encode_dataset`.
    """

    def __init__(self, data: datasets.Dataset) -> None:
        names = [c for c in data.column_names if c.startswith("tokens")]
        self.levels = sorted(names, key=lambda c: int(c.rsplit("_", 1)[1]) if "_" in c else 0)
        self.extras = [c for c in data.column_names if c not in {*names, "caption", "spec"}]
        # fixed-shape columns read as one array: Arrow's nested lists converted row by row
        # cost more than a small model's training step (0.7 s for 64 rows of 64 x 8 x 8)
        self.arrays = {c: dense_column(data, c) for c in (*self.levels, *self.extras)}
        self.arrays = {c: a for c, a in self.arrays.items() if a is not None}
        rest = [c for c in data.column_names if c not in self.arrays]
        self.data = data.with_format("numpy", columns=rest)

    def __len__(self) -> int:
        return len(self.data)

    def _column(self, row: dict, name: str, index: int) -> np.ndarray:
        return self.arrays[name][index].copy() if name in self.arrays else np.asarray(row[name])

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.data[index]
        grids = tuple(torch.from_numpy(self._column(row, c, index)).long() for c in self.levels)
        tokens = {"image_tokens": grids[0] if len(grids) == 1 else grids} if grids else {}
        extras = {c: self._column(row, c, index).astype(np.float32) for c in self.extras}
        return {
            **tokens,
            "caption": str(row["caption"]),
            "spec": json.loads(str(row["spec"])),
            **{c: torch.from_numpy(v) for c, v in extras.items()},
        }


def dense_column(data: datasets.Dataset, name: str) -> np.ndarray | None:
    """A column of same-shape nested lists as one (rows, *shape) array (sharing Arrow's
    memory where it can), or None for a ragged column or an index-mapped data set."""
    if data._indices is not None or len(data) == 0:
        return None
    flat, shape = data.data.column(name), []
    while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type):
        lengths = pc.min_max(pc.list_value_length(flat))
        if lengths["min"] != lengths["max"]:
            return None  # ragged at this level
        shape.append(lengths["min"].as_py())
        flat = pc.list_flatten(flat)
    if pa.types.is_nested(flat.type) or flat.null_count:
        return None
    values = flat.to_numpy()
    return values.reshape(len(data), *shape)
