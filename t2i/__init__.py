"""t2i: text-conditioned image generation in the DALL-E family, trained by one Accelerate loop.

Public names (imported on first use, so `import t2i` stays light): `load_pipeline`, the
route pipelines `DALLEPipeline`, `UnCLIPPipeline`, `LatentDiffusionPipeline` and
`MaskGITPipeline`, the saved bundle of several routes
`TextToImagePipeline`, and the model classes a saved pipeline names (`CLIPModel`,
`DALLEPrior`, `VQVAE`, `VQVAE2`, `DiscreteVAE`, ...). Submodules: `t2i.models`,
`t2i.pipelines`, `t2i.data` (the shapes world), `t2i.evaluation` (the shapes judge),
`t2i.training` (the trainer), `t2i.config`. Command lines: `python -m t2i.generate`,
`python -m t2i.train`, `python -m t2i.evaluate`, `python -m t2i.data.shapes`.
"""

from __future__ import annotations

import importlib
from typing import Any

from t2i._version import __version__

_PIPELINE_NAMES = (
    "TextToImagePipeline",
    "DALLEPipeline",
    "UnCLIPPipeline",
    "LatentDiffusionPipeline",
    "MaskGITPipeline",
    "load_pipeline",
    "PipelineFormatError",
)


def __getattr__(name: str) -> Any:
    """Lazy public names; diffusers also finds a saved pipeline's component classes here."""
    if name in _PIPELINE_NAMES:
        return getattr(importlib.import_module("t2i.pipelines"), name)
    models = importlib.import_module("t2i.models")
    if name in models.__all__:
        return getattr(models, name)
    raise AttributeError(f"module 't2i' has no attribute {name!r}")


__all__ = ["__version__", *_PIPELINE_NAMES]
