"""The shapes judge: reads an image and its spec and says, from pixels alone, what is right.

Like GenEval (Ghosh et al., 2023), but exact for the shapes world. A pixel whose brightest
channel is well above black is foreground; its color is the palette color whose direction in
RGB space is nearest (so a soft, darkened edge keeps its hue). Connected foreground blobs are
objects; a blob holding two colors in strength (two objects that blur into each other) is split
by color, and specks are dropped. An object's shape comes from how its brightness is spread: a
triangle (apex up) is skewed towards its base, and a square's fourth cumulant along its
diagonals is half that along its axes, where a disc's is the same (both survive blur). Its size
comes from the box side (0.40 S or 0.22 S), its cell from the box center on the 3 x 3 grid, and
a relation from the centers. Spec objects are matched to found
objects in the best order. Prompt fidelity is the share of images with every stated attribute
right and no extra object.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2i.data.shapes import CELLS, PALETTE, RELATION_MARGIN, SIZES

FOREGROUND = 100  # brightest channel (0-255) above this is an object: ~0.4 of a palette color
MIN_AREA = 0.006  # smallest object, a fraction of S^2 (a small triangle covers ~0.024)
MIN_SHARE = 0.1  # a color owning this share of a blob (and MIN_AREA, connected) may be an object
TRIANGLE_SKEW = -0.2  # vertical skewness below this is a triangle (apex up)
SQUARE_RATIO = 0.78  # 4th cumulant along the diagonals over along the axes below this: a square
VERDICTS = ("color", "shape", "size", "cell", "relation")
_COLORS = list(PALETTE)
_RGB = np.array([PALETTE[c] for c in _COLORS], np.float32)  # (8, 3)
_DIRECTIONS = _RGB / np.linalg.norm(_RGB, axis=1, keepdims=True)  # (8, 3) unit hues


@dataclass
class Found:
    """An object found in an image: attributes read from pixels, box center in pixels."""

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


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean mask: (H, W) int labels, -1 off the mask.

    Each pixel takes the smallest flat index among its neighbours until nothing changes,
    with pointer jumping (a label is a pixel whose own label it then adopts), so the loop
    runs a few dozen vectorised steps rather than one Python step per pixel.

    Args:
        mask: (H, W) bool.
    """
    h, w = mask.shape
    off = h * w
    labels = np.where(mask, np.arange(off).reshape(h, w), off)
    while True:
        p = np.pad(labels, 1, constant_values=off)
        new = np.minimum.reduce([labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        new[~mask] = off
        flat = new.ravel()
        on = flat < off
        flat[on] = flat[flat[on]]  # pointer jumping
        if np.array_equal(new, labels):
            return np.where(mask, labels, -1)
        labels = new


def _blobs(mask: np.ndarray, min_pixels: float) -> list[np.ndarray]:
    """The components of a mask with at least `min_pixels` pixels, as (N, 2) (row, col) arrays."""
    labels = label_components(mask)
    ids, counts = np.unique(labels[mask], return_counts=True)
    return [np.argwhere(labels == i) for i, n in zip(ids, counts, strict=True) if n >= min_pixels]


def _shape(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> str:
    """Triangle if the area is skewed towards the base, else square or disc by 4th cumulants.

    Brightness-weighted cumulants: a symmetric blur adds nothing to the third cumulant and a
    Gaussian one nothing to the fourth, so both survive soft edges. Along the diagonals a
    square's fourth cumulant is half its value along the axes; a disc's is the same in every
    direction.
    """
    w = weight / weight.sum()
    y, x = rows - (w * rows).sum(), cols - (w * cols).sum()
    vy, vx, cxy = (w * y * y).sum(), (w * x * x).sum(), (w * x * y).sum()
    skew = (w * y**3).sum() / max(vy, 1e-6) ** 1.5  # ideal triangle -0.57, disc and square 0
    if skew < TRIANGLE_SKEW:
        return "triangle"
    k40, k04 = (w * x**4).sum() - 3 * vx * vx, (w * y**4).sum() - 3 * vy * vy
    k22 = (w * x * x * y * y).sum() - vx * vy - 2 * cxy * cxy
    diagonal = (k40 + k04 + 6 * k22) / 2  # the 4th cumulants along both diagonals, summed
    ratio = diagonal / min(k40 + k04, -1e-6)  # square 1/2, disc 1
    return "square" if ratio < SQUARE_RATIO else "circle"


def _classify(pixels: np.ndarray, brightness: np.ndarray, color: str, size: int) -> Found:
    """Read shape, size, cell and center off one object's pixels and their brightness."""
    rows, cols = pixels[:, 0].astype(np.float64), pixels[:, 1].astype(np.float64)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height, width = int(bottom - top), int(right - left)
    shape = _shape(rows, cols, brightness[pixels[:, 0], pixels[:, 1]])
    side = max(height, width)
    cx = (left + right) / 2
    # a blurred triangle loses its apex first, so its center is read off its base (base = height)
    cy = bottom - side / 2 if shape == "triangle" else (top + bottom) / 2
    small, large = SIZES["small"] * size, SIZES["large"] * size
    col, row = min(max(int(cx * 3 / size), 0), 2), min(max(int(cy * 3 / size), 0), 2)
    return Found(
        color=color,
        shape=shape,
        size="large" if side > (small + large) / 2 else "small",
        cell=CELLS[row * 3 + col],
        cx=float(cx),
        cy=float(cy),
        area=len(pixels),
    )


def find_objects(image: Any) -> list[Found]:
    """The objects in an image, largest first.

    A connected foreground blob is one object of its majority color, so the off-color fringe of
    a blurry edge is no extra object; a blob in which two colors are strong (two objects run
    together) is split by color.

    Args:
        image: a PIL image, a uint8 (H, W, 3) array or a (3, H, W) tensor in [-1, 1].
    """
    array = to_array(image).astype(np.float32)
    size = array.shape[0]
    min_pixels = MIN_AREA * size * size
    brightness = array.max(axis=2)
    foreground = brightness > FOREGROUND
    hue = np.full(foreground.shape, -1)
    hue[foreground] = (array[foreground] @ _DIRECTIONS.T).argmax(-1)  # nearest palette direction
    found = []
    for blob in _blobs(foreground, min_pixels):
        hues = hue[blob[:, 0], blob[:, 1]]
        counts = np.bincount(hues, minlength=len(_COLORS))
        parts = []  # connected same-color parts, where two colors are strong in one blob
        for k in np.nonzero(counts >= max(min_pixels, MIN_SHARE * len(blob)))[0]:
            mask = np.zeros_like(foreground)
            mask[blob[:, 0], blob[:, 1]] = hues == k
            parts += [(p, _COLORS[k]) for p in _blobs(mask, min_pixels)]
        if len(parts) <= 1:  # one object; stray off-color pixels are its fringe
            parts = [(blob, _COLORS[int(counts.argmax())])]
        found += [_classify(p, brightness, color, size) for p, color in parts]
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
    if best is None or len(found) < len(objects):  # a missing object fails all it states
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
    """The share of images whose every stated attribute is right with no extra object.

    Args:
        images: images in any form `judge` takes.
        specs: one spec per image.
    """
    return judge_many(images, specs)["fidelity"]
