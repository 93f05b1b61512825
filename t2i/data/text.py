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

    Args:
        context_length: caption length in tokens.
    """

    def __init__(self, context_length: int = 32) -> None:
        self.tokenizer = get_tokenizer(context_length)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        captions = [s["caption"] for s in samples]
        batch: dict[str, Any] = {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),  # (B, 3, H, W)
            "input_ids": self.tokenizer(captions),  # (B, L)
            "caption": captions,
        }
        if "spec" in samples[0]:
            batch["spec"] = [s["spec"] for s in samples]
        return batch
