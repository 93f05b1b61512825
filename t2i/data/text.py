"""Caption tokenisation and batching: open_clip's BPE tokenizer, shared by every text model."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from open_clip.tokenizer import SimpleTokenizer

# spatial relations and their opposites: "A left of B" is false where "A right of B" is true
OPPOSITE_RELATIONS = {
    "to the left of": "to the right of",
    "left of": "right of",
    "above": "below",
    "over": "under",
    "on top of": "underneath",
    "in front of": "behind",
}
OPPOSITE_RELATIONS.update({v: k for k, v in list(OPPOSITE_RELATIONS.items())})
_RELATION = re.compile(
    r"\b("
    + "|".join(re.escape(r) for r in sorted(OPPOSITE_RELATIONS, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)
HARD_NEGATIVES = ("relations",)  # the kinds of hard negative captions `CaptionCollator` makes


def get_tokenizer(context_length: int = 32) -> SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships inside open-clip-torch; no download).

    Args:
        context_length: token sequence length; longer captions are truncated, keeping the end token.
    """
    return SimpleTokenizer(context_length=context_length)


def swap_relation(caption: str) -> str | None:
    """The caption with its first spatial relation turned into its opposite ("a red circle to
    the left of a blue square" -> "... to the right of ..."), or None when it states none: a
    caption that is false of the image the original describes, but differs from it only in
    the relation (NegCLIP's hard negatives, Yuksekgonul et al. 2023).

    Args:
        caption: any caption.
    """
    found = _RELATION.search(caption)
    if found is None:
        return None
    opposite = OPPOSITE_RELATIONS[found.group(1).lower()]
    return caption[: found.start()] + opposite + caption[found.end() :]


class CaptionCollator:
    """Stacks samples into a batch dict and tokenises their captions into `input_ids`.

    Tensors are stacked (`pixel_values` (B, 3, H, W), `image_tokens` (B, h, w)); a tuple of
    tensors (the grids of a hierarchical tokenizer) becomes a tuple of stacks; anything else
    (`caption`, `spec`) becomes a list. With `hard_negatives="relations"`, each caption's
    relation-swapped caption (`swap_relation`) is tokenised too, as `negative_input_ids`
    (B, context_length; the caption itself where it states no relation) with
    `negative_mask` (B,), True where the row has a negative.

    Args:
        context_length: caption length in tokens.
        hard_negatives: None, or "relations".
        tokenizer: texts -> ids (B, context_length), the text tower's own (a CLIP's
            `tokenizer` with a Hugging Face text model); None: open_clip's BPE.
    """

    def __init__(
        self,
        context_length: int = 32,
        hard_negatives: str | None = None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        if hard_negatives not in (None, *HARD_NEGATIVES):
            raise ValueError(
                f"hard_negatives={hard_negatives!r}: expected one of "
                f"{', '.join(HARD_NEGATIVES)} or None"
            )
        self.tokenizer = tokenizer or get_tokenizer(context_length)
        self.hard_negatives = hard_negatives

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key, first in samples[0].items():
            values = [s[key] for s in samples]
            if torch.is_tensor(first):
                batch[key] = torch.stack(values)
            elif isinstance(first, tuple):
                batch[key] = tuple(torch.stack(level) for level in zip(*values, strict=True))
            else:
                batch[key] = values
        if "caption" not in batch:  # images alone (a tokenizer's data needs no captions)
            return batch
        batch["input_ids"] = self.tokenizer(batch["caption"])  # (B, L)
        if self.hard_negatives == "relations":
            swapped = [swap_relation(c) for c in batch["caption"]]
            batch["negative_mask"] = torch.tensor([n is not None for n in swapped])
            negatives = [n or c for n, c in zip(swapped, batch["caption"], strict=True)]
            batch["negative_input_ids"] = self.tokenizer(negatives)  # (B, L)
        return batch
