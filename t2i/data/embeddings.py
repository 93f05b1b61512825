"""A cache of CLIP (image embedding, text embedding) pairs, so the unCLIP stages train fast.

The diffusion prior learns text embedding -> image embedding, and the decoder learns image
embedding -> image: both need every training image and caption through a frozen CLIP. The
data set is encoded once and stored as a `datasets` data set on disk, in the same keyed,
atomically written cache as the tokenizer codes (`t2i.data.tokens.cached_tokens`): a
retrained CLIP gives a new key and its stale entry is dropped.

This module knows no model: it takes `encode_images` and `encode_texts` callables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from t2i.data.tokens import collate_images


@torch.no_grad()
def encode_embeddings(
    dataset: Dataset,
    encode_images: Callable[[torch.Tensor], torch.Tensor],
    encode_texts: Callable[[list[str]], torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> datasets.Dataset:
    """Every image and caption of a data set as embeddings: a `datasets.Dataset` with
    caption, spec, `image_embeds` and `text_embeds` (float32 rows).

    Args:
        dataset: yields dicts with `pixel_values` (3, H, W), `caption` and optionally `spec`.
        encode_images: images (N, 3, H, W) on `device` -> embeddings (N, D).
        encode_texts: captions -> embeddings (N, D).
        batch_size: images per call.
        device: where the images go before `encode_images`.
        num_workers: DataLoader workers that render or read the images.
    """
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers
    )
    parts: dict[str, list] = {"caption": [], "spec": [], "image_embeds": [], "text_embeds": []}
    for batch in tqdm(loader, desc="CLIP embeddings", unit="batch"):
        parts["caption"] += batch["caption"]
        parts["spec"] += batch["spec"]
        images = encode_images(batch["pixel_values"].to(device))
        parts["image_embeds"].append(images.float().cpu().numpy())
        parts["text_embeds"].append(encode_texts(batch["caption"]).float().cpu().numpy())
    for name in ("image_embeds", "text_embeds"):
        parts[name] = list(np.concatenate(parts[name]))
    return datasets.Dataset.from_dict(parts)


class EmbeddingDataset(Dataset):
    """Cached pairs as training samples: `image_embeds` and `text_embeds` ((D,) float32),
    `caption` and `spec`.

    Args:
        data: a data set made by `encode_embeddings`.
    """

    def __init__(self, data: datasets.Dataset) -> None:
        missing = {"image_embeds", "text_embeds", "caption"} - set(data.column_names)
        if missing:
            raise ValueError(f"an embedding cache needs the columns {sorted(missing)}")
        self.data = data.with_format("numpy")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.data[index]
        return {
            "image_embeds": torch.from_numpy(np.asarray(row["image_embeds"], dtype=np.float32)),
            "text_embeds": torch.from_numpy(np.asarray(row["text_embeds"], dtype=np.float32)),
            "caption": str(row["caption"]),
            "spec": json.loads(str(row["spec"])),
        }
