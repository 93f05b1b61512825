"""Pipelines: the routes from a prompt to images, assembled from t2i's trained models."""

from __future__ import annotations

from pathlib import Path

import torch

from t2i.pipelines.text_to_image import (
    FORMAT,
    PipelineFormatError,
    TextToImagePipeline,
    check_pipeline_dir,
    saved_components,
)

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "assets" / "default"


def load_pipeline(
    path: str | Path | None = None, device: str | torch.device | None = None
) -> TextToImagePipeline:
    """A saved pipeline in float32 on `device`; with no path, the default shipped with t2i.

    Args:
        path: a directory `TextToImagePipeline.save_pretrained` wrote (None: the default,
            trained on the shapes world by scripts/build_default.py).
        device: where to run it ("cpu", "cuda"; None: CUDA when present).
    """
    if path is None and not (DEFAULT_PIPELINE / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{DEFAULT_PIPELINE}: the default pipeline is not in this install; build it "
            "with `python scripts/build_default.py` or pass a pipeline directory"
        )
    pipe = TextToImagePipeline.from_pretrained(path or DEFAULT_PIPELINE, torch_dtype=torch.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return pipe.to(device)


__all__ = [
    "DEFAULT_PIPELINE",
    "FORMAT",
    "PipelineFormatError",
    "TextToImagePipeline",
    "check_pipeline_dir",
    "load_pipeline",
    "saved_components",
]
