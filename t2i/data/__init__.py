"""Data: the shapes world (`t2i.data.shapes`), and caption batching with open_clip's BPE
tokenizer (`t2i.data.text`). Both are imported on first use: open_clip is slow to import and
the shapes world does not need it, and `python -m t2i.data.shapes` runs a module that this
package must not have imported already."""

from typing import Any

__all__ = ["CaptionCollator", "ShapesDataset", "get_tokenizer", "make_sample", "render_spec"]
_FROM = {
    "CaptionCollator": "text",
    "get_tokenizer": "text",
    "ShapesDataset": "shapes",
    "make_sample": "shapes",
    "render_spec": "shapes",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(f"t2i.data.{_FROM[name]}"), name)
    raise AttributeError(f"module 't2i.data' has no attribute {name!r}")
