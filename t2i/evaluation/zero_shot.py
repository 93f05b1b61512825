"""How well a CLIP model reads the shapes world: zero-shot attribute accuracy and retrieval.

Zero-shot (Radford et al. 2021, section 3.1): for each attribute, embed one prompt per value
("a red shape", "a circle", "something in the top left", "a large shape") and predict the
value whose prompt is nearest to the image embedding. Retrieval: for each caption, rank all
images by similarity; recall@k is the share of captions whose own image is in the top k.

Works with any object that has `tokenize`, `encode_text` and `encode_image`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from t2i.data.shapes import CELL_PHRASES, CELLS, PALETTE, SHAPES, SIZES
from t2i.data.text import swap_relation

PROMPTS: dict[str, tuple[Sequence[str], Callable[[str], str]]] = {
    "color": (tuple(PALETTE), lambda v: f"a {v} shape"),
    "shape": (SHAPES, lambda v: f"a {v}"),
    "size": (tuple(SIZES), lambda v: f"a {v} shape"),
    "cell": (CELLS, lambda v: f"something {CELL_PHRASES[v]}"),
}


@torch.no_grad()
def _embed_images(clip: Any, images: Tensor, batch_size: int) -> Tensor:
    """Unit-norm embeddings of images (N, 3, H, W) in batches, (N, D) on the CPU."""
    return torch.cat(
        [
            clip.encode_image(images[i : i + batch_size]).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def _embed_texts(clip: Any, texts: Sequence[str], batch_size: int) -> Tensor:
    """Unit-norm embeddings of prompts in batches, (T, D) on the CPU."""
    out = []
    for i in range(0, len(texts), batch_size):
        ids = clip.tokenize(list(texts[i : i + batch_size]), warn=False).to(clip.device)
        out.append(clip.encode_text(ids).float().cpu())
    return torch.cat(out)


def zero_shot_accuracy(
    clip: Any, images: Tensor, attributes: Sequence[dict[str, str]], batch_size: int = 250
) -> dict[str, float]:
    """Share of images whose true value of each attribute ranks first among its prompts.

    Args:
        clip: a CLIP model.
        images: one-object images (N, 3, H, W) on [-1, 1].
        attributes: the true {"color", "shape", "size", "cell"} of each image's object.
        batch_size: images per forward pass.
    """
    image_embeds = _embed_images(clip, images, batch_size)  # (N, D)
    results = {}
    for name, (values, prompt) in PROMPTS.items():
        text_embeds = _embed_texts(clip, [prompt(v) for v in values], batch_size)  # (V, D)
        predicted = (image_embeds @ text_embeds.t()).argmax(1)  # (N,)
        truth = torch.tensor([list(values).index(a[name]) for a in attributes])
        results[name] = float((predicted == truth).float().mean())
    return results


def retrieval_recall(
    clip: Any,
    images: Tensor,
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5),
    batch_size: int = 250,
) -> dict[str, float]:
    """Text -> image recall@k: the share of captions whose own image ranks in the top k.

    Args:
        clip: a CLIP model.
        images: (N, 3, H, W) on [-1, 1]; image i is the one captions[i] describes.
        captions: N captions.
        ks: the k of each recall.
        batch_size: items per forward pass.
    """
    sims = _embed_texts(clip, captions, batch_size) @ _embed_images(clip, images, batch_size).t()
    own = sims.diagonal().unsqueeze(1)  # (N, 1)
    rank = (sims > own).sum(1)  # images scoring strictly higher than the caption's own
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def relation_accuracy(
    clip: Any, images: Tensor, captions: Sequence[str], batch_size: int = 250
) -> float:
    """The share of images that score their own caption above the same caption with its
    spatial relation reversed (`swap_relation`): 0.5 is a CLIP blind to relations.

    Args:
        clip: a CLIP model.
        images: (N, 3, H, W) on [-1, 1]; image i is the one captions[i] describes.
        captions: N captions, each stating a relation.
    """
    swapped = [swap_relation(c) for c in captions]
    missing = [c for c, s in zip(captions, swapped, strict=True) if s is None]
    if missing:
        raise ValueError(f"caption {missing[0]!r} states no spatial relation to reverse")
    embeds = _embed_images(clip, images, batch_size)  # (N, D)
    own = (embeds * _embed_texts(clip, captions, batch_size)).sum(1)
    reversed_ = (embeds * _embed_texts(clip, swapped, batch_size)).sum(1)
    return float((own > reversed_).float().mean())
