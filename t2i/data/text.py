"""Caption tokenisation and batching: open_clip's BPE tokenizer, shared by every text model."""

from __future__ import annotations

from typing import Any

import torch
from open_clip.tokenizer import SimpleTokenizer

VOCAB_SIZE = 49408  # open_clip's BPE vocabulary, <start_of_text> = 49406, <end_of_text> = 49407


def get_tokenizer(context_length: int = 32) -> SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships inside open-clip-torch; no download).

    Args:
        context_length: token sequence length; longer captions are truncated, keeping the end token.
    """
    return SimpleTokenizer(context_length=context_length)


class CaptionCollator:
    """Stacks samples into a batch dict and tokenises their captions into `input_ids`.

    Tensors are stacked (`pixel_values` (B, 3, H, W), `image_tokens` (B, h, w)); a tuple of
    tensors (the grids of a hierarchical tokenizer) becomes a tuple of stacks; anything else
    (`caption`, `spec`) becomes a list.

    Args:
        context_length: caption length in tokens.
    """

    def __init__(self, context_length: int = 32) -> None:
        self.tokenizer = get_tokenizer(context_length)

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
        batch["input_ids"] = self.tokenizer(batch["caption"])  # (B, L)
        return batch
