"""Pipelines: the routes from a prompt to images, one file per route, assembled from t2i's
trained models: `DALLEPipeline` (dalle.py), `UnCLIPPipeline` (unclip.py),
`LatentDiffusionPipeline` (ldm.py), `MaskGITPipeline` (maskgit.py); the saved bundle of
several routes' components, `TextToImagePipeline` (bundle.py); what they share (common.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from t2i.cli import default_route, pipeline_path
from t2i.models import resolve_dtype
from t2i.pipelines.bundle import NEEDS, ROUTES, TextToImagePipeline, missing_route
from t2i.pipelines.common import (
    FORMAT,
    CodeSampling,
    PipelineFormatError,
    SamplingSettings,
    T2IPipeline,
    T2IPipelineOutput,
    check_pipeline_dir,
    saved_components,
)
from t2i.pipelines.dalle import DALLEPipeline, DALLESampling
from t2i.pipelines.ldm import LatentDiffusionPipeline, LDMSampling
from t2i.pipelines.maskgit import MaskGITPipeline, MaskGITSampling
from t2i.pipelines.unclip import UnCLIPPipeline, UnCLIPSampling

DEFAULT_PIPELINE = pipeline_path(None)
CLASSES = {cls.__name__: cls for cls in (TextToImagePipeline, *ROUTES.values())}


def load_pipeline(
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    route: str | None = None,
    torch_dtype: torch.dtype | str = torch.float32,
) -> T2IPipeline:
    """A route of a saved pipeline on `device`, its weights in `torch_dtype`; with no path,
    the default shipped with t2i.

    Args:
        path: a directory a pipeline's `save_pretrained` wrote (None: the default, trained
            on the shapes world by scripts/build_default.py).
        device: where to run it ("cpu", "cuda"; None: CUDA when present).
        route: "dalle", "unclip", "ldm" or "maskgit", of a bundle (`TextToImagePipeline`); a
            saved route pipeline must be of this route (None: DALL-E when the pipeline has
            it, else its first route).
        torch_dtype: the weights' type, or its name ("float16"): float32; bfloat16 or
            float16 halve the memory, on a GPU mostly; sampling keeps its logits and noise
            in float32.
    """
    if path is None and not (DEFAULT_PIPELINE / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{DEFAULT_PIPELINE}: the default pipeline is not in this install; build it "
            "with `python scripts/build_default.py` or pass a pipeline directory"
        )
    torch_dtype = resolve_dtype(torch_dtype)  # before any loading
    device = check_device(device)
    path = pipeline_path(path)
    index = check_pipeline_dir(path)
    route = route or default_route(index)
    cls = CLASSES[index["_class_name"]]
    if cls is not TextToImagePipeline and ROUTES.get(route) is not cls:
        raise ValueError(f"route={route!r}: {path} holds a {cls.__name__} only")
    if route not in ROUTES:
        raise ValueError(f"route={route!r}: use one of {tuple(ROUTES)}")
    if cls is TextToImagePipeline:  # a bundle: the route's own components, nothing else
        saved = saved_components(index)
        lacking = [n for n in NEEDS[route] if n not in saved]
        if lacking:
            raise missing_route(route, lacking, index.get("_t2i_routes") or [])
        cls = ROUTES[route]
    pipe = cls.from_pretrained(path, torch_dtype=torch_dtype)
    if device.type == "cpu":  # loaded there; diffusers' .to("cpu") would warn that float16
        return pipe  # cannot run on the CPU, which torch's CPU kernels have done since 2.1
    return pipe.to(device)


def check_device(device: str | torch.device | None) -> torch.device:
    """Where a pipeline runs: None -> CUDA when present, else the CPU; a ValueError naming a
    device this machine does not have (torch would fail on the first tensor moved there)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r}: not a device (use 'cpu' or 'cuda')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: no CUDA device here (use 'cpu' or None)")
    return device


__all__ = [
    "CLASSES",
    "DEFAULT_PIPELINE",
    "FORMAT",
    "ROUTES",
    "CodeSampling",
    "DALLEPipeline",
    "DALLESampling",
    "LDMSampling",
    "LatentDiffusionPipeline",
    "MaskGITPipeline",
    "MaskGITSampling",
    "PipelineFormatError",
    "SamplingSettings",
    "T2IPipeline",
    "T2IPipelineOutput",
    "TextToImagePipeline",
    "UnCLIPPipeline",
    "UnCLIPSampling",
    "check_pipeline_dir",
    "load_pipeline",
    "saved_components",
]
