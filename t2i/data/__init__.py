"""Data: the shapes world and caption batching (open_clip's BPE tokenizer)."""

from t2i.data.shapes import ShapesDataset, make_sample, render_spec
from t2i.data.text import CaptionCollator, get_tokenizer

__all__ = ["CaptionCollator", "ShapesDataset", "get_tokenizer", "make_sample", "render_spec"]
