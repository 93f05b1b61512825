"""The shapes judge: reads an image and its spec and says, from pixels alone, what is right.

Like GenEval, but exact for the shapes world. Each foreground pixel (well above black) takes
the nearest palette color; connected regions of one color that are not specks are objects.
An object's shape comes from how its area is spread (a triangle holds three quarters of its
area in the lower half of its box; a square fills its box, a disc about pi/4 of it), its size
from the box side (0.40 S or 0.22 S), its cell from the box center on the 3 x 3 grid, and a
relation from the centers. Spec objects are matched to found objects in the best order.
Prompt fidelity is the share of images with every stated attribute right and no extra object.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2i.data.shapes import CELLS, PALETTE, RELATION_MARGIN, SIZES

FOREGROUND = 75  # a pixel whose brightest channel exceeds this is not background
MIN_AREA = 0.12 * (SIZES["small"]) ** 2  # smallest object area kept, a fraction of S^2
VERDICTS = ("color", "shape", "size", "cell", "relation")
_COLORS = list(PALETTE)
_RGB = np.array([PALETTE[c] for c in _COLORS], np.float32)  # (8, 3)


@dataclass
class Found:
    """An object found in an image: attributes read from pixels, center in pixels."""

    color: str
    shape: str
    size: str
    cell: str
    cx: float
    cy: float
    area: int


def to_array(image: Any) -> np.ndarray:
    """An image as uint8 (H, W, 3): from PIL, a uint8 array, or a float tensor in [-1, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), np.uint8)
    if torch.is_tensor(image):
        x = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
        return x.permute(1, 2, 0).to(torch.uint8).numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(
            f"expected a PIL image, uint8 (H, W, 3) array or (3, H, W) tensor, "
            f"got {type(image).__name__} {getattr(array, 'shape', '')}"
        )
    return array


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected regions of a boolean mask, as arrays of (row, col) pixel indices."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    regions = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, pixels = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        regions.append(np.array(pixels))
    return regions


def _classify(pixels: np.ndarray, color: str, size: int) -> Found:
    """Read shape, size and cell off one region's pixels."""
    rows, cols = pixels[:, 0], pixels[:, 1]
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height, width = bottom - top, right - left
    side = max(height, width)
    mid = (top + bottom) / 2
    lower = np.count_nonzero(rows + 0.5 > mid) / len(pixels)  # share of area in the lower half
    fill = len(pixels) / (height * width)
    if lower > 0.62:
        shape = "triangle"
    else:
        shape = "square" if fill > 0.88 else "circle"
    small, large = SIZES["small"] * size, SIZES["large"] * size
    cx, cy = (left + right) / 2, (top + bottom) / 2
    col, row = min(int(cx * 3 / size), 2), min(int(cy * 3 / size), 2)
    return Found(
        color,
        shape,
        "large" if side > (small + large) / 2 else "small",
        CELLS[row * 3 + col],
        float(cx),
        float(cy),
        len(pixels),
    )


def find_objects(image: Any) -> list[Found]:
    """The objects in an image, largest first.

    Args:
        image: a PIL image, a uint8 (H, W, 3) array or a (3, H, W) tensor in [-1, 1].
    """
    array = to_array(image).astype(np.float32)
    size = array.shape[0]
    foreground = array.max(axis=2) > FOREGROUND
    nearest = ((array[:, :, None, :] - _RGB) ** 2).sum(-1).argmin(-1)  # (H, W) palette index
    found = []
    for k, color in enumerate(_COLORS):
        for pixels in _components(foreground & (nearest == k)):
            if len(pixels) >= MIN_AREA * size * size:
                found.append(_classify(pixels, color, size))
    return sorted(found, key=lambda f: -f.area)


def _relation_ok(a: Found, b: Found, relation: str, size: int) -> bool:
    """`a REL b` between centers, with half the renderer's margin as tolerance for blur."""
    dx, dy, m = b.cx - a.cx, b.cy - a.cy, RELATION_MARGIN * size / 2
    return {"above": dy, "below": -dy, "left of": dx, "right of": -dx}[relation] >= m


def _score(objects: Sequence[dict], found: Sequence[Found]) -> dict[str, bool]:
    """Per-attribute verdicts for one assignment of spec objects to found objects."""
    verdict = {k: True for k in VERDICTS}
    for obj, f in zip(objects, found, strict=False):
        for key in ("color", "shape", "size", "cell"):
            if key in obj and obj[key] != getattr(f, key):
                verdict[key] = False
    return verdict


def judge(image: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Judge one image against its spec.

    Args:
        image: a PIL image, a uint8 (H, W, 3) array or a (3, H, W) tensor in [-1, 1].
        spec: {"objects": [{"shape", "color", "size", "cell"} (any subset)], "relation": ...}.

    Returns:
        {"color", "shape", "size", "cell", "relation": bool (right, or not stated),
        "extra": bool (an object beyond the spec's), "found": int, "ok": bool}.
    """
    array = to_array(image)
    found = find_objects(array)
    objects, relation = spec["objects"], spec.get("relation")
    best = None
    for order in itertools.permutations(found, min(len(objects), len(found))):
        verdict = _score(objects, order)
        if relation and len(order) == 2:
            verdict["relation"] = _relation_ok(order[0], order[1], relation, array.shape[0])
        if best is None or sum(verdict.values()) > sum(best.values()):
            best = verdict
    best = best or {k: False for k in VERDICTS}
    if len(found) < len(objects):  # a missing object is wrong in every attribute it states
        best = {k: False for k in VERDICTS}
    result: dict[str, Any] = {**best, "extra": len(found) > len(objects), "found": len(found)}
    result["ok"] = all(best.values()) and len(found) == len(objects)
    return result


def judge_many(images: Sequence[Any], specs: Sequence[dict]) -> dict[str, float]:
    """Prompt fidelity and per-attribute accuracy over many images.

    Args:
        images: images in any form `judge` takes.
        specs: one spec per image.

    Returns:
        {"fidelity": share ok, "color" ... "relation": share right, "extra": share with an
        extra object, "n": count}.
    """
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} specs")
    verdicts = [judge(im, sp) for im, sp in zip(images, specs, strict=True)]
    n = max(len(verdicts), 1)
    out = {"fidelity": sum(v["ok"] for v in verdicts) / n}
    for key in (*VERDICTS, "extra"):
        out[key] = sum(v[key] for v in verdicts) / n
    out["n"] = len(verdicts)
    return out


def prompt_fidelity(images: Sequence[Any], specs: Sequence[dict]) -> float:
    """The share of images whose every stated attribute is right with no extra object."""
    return judge_many(images, specs)["fidelity"]
