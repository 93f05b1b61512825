"""Data: the shapes world, and caption batching with open_clip's BPE tokenizer (`t2i.data.text`,
imported on first use: open_clip is slow to import and the shapes world does not need it)."""

from typing import Any

from t2i.data.shapes import ShapesDataset, make_sample, render_spec

__all__ = ["CaptionCollator", "ShapesDataset", "get_tokenizer", "make_sample", "render_spec"]


def __getattr__(name: str) -> Any:
    if name in ("CaptionCollator", "get_tokenizer"):
        from t2i.data import text

        return getattr(text, name)
    raise AttributeError(f"module 't2i.data' has no attribute {name!r}")
