"""The shapes world: a seeded, captioned, procedural image world (the project's SHAPES.md spec).

Circles, squares and apex-up triangles in eight colors and two sizes, on a 3 x 3 grid of
cells, alone or in pairs with a spatial relation, on a black S x S canvas (S = 32 or 64).
Sample i of seed s is drawn from its own `numpy.random.Generator(PCG64(SeedSequence([s, i])))`,
so it is the same on every machine and independent of every other sample. Each sample
carries its structured spec beside the caption; a key left out of a spec object means the
caption did not say it.

    python -m t2i.data.shapes export DIR --n N --seed S [--size 32] [--num-objects 1|2]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # a bad command line is refused before the heavy imports below
    from t2i.cli import precheck_shapes

    precheck_shapes(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from t2i.cli import check_export_dir, shapes_parser  # noqa: E402

logger = logging.getLogger(__name__)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 20),
    "purple": (150, 40, 200),
    "cyan": (20, 210, 220),
    "orange": (250, 130, 20),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"large": 0.40, "small": 0.22}  # bounding-box side, a fraction of S
CELLS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)  # row-major over the 3 x 3 grid
RELATIONS = ("above", "below", "left of", "right of")  # objects[0] REL objects[1]
JITTER = 0.04  # largest offset of a center from its cell's center, a fraction of S
RELATION_MARGIN = 0.08  # the relation holds between centers by at least this, a fraction of S
GAP = 0.06  # the least gap between two objects' boxes, a fraction of S (a soft edge stays apart)

CELL_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
RELATION_PHRASES = {
    "above": "above",
    "below": "below",
    "left of": "to the left of",
    "right of": "to the right of",
}
TEMPLATES = (
    "{}",
    "there is {}",
    "a picture of {}",
    "{} on a black background",
    "an image of {}",
    "a drawing of {}",
)
ATTRIBUTES = ("shape", "color", "size", "cell")
MAX_TRIES = 1000


@dataclasses.dataclass
class Placed:
    """One object as drawn: its attributes and its center and side in pixels."""

    shape: str
    color: str
    size: str
    cell: str
    cx: float
    cy: float
    side: float

    def box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in pixels."""
        h = self.side / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h


def cell_center(cell: str, size: int) -> tuple[float, float]:
    """The pixel center (x, y) of a grid cell."""
    row, col = divmod(CELLS.index(cell), 3)
    return (col + 0.5) * size / 3, (row + 0.5) * size / 3


def _place(rng: np.random.Generator, attrs: dict[str, str], size: int) -> Placed:
    """Jitter an object around its cell's center and clamp it inside the canvas."""
    side = SIZES[attrs["size"]] * size
    x, y = cell_center(attrs["cell"], size)
    x, y = np.asarray([x, y]) + rng.uniform(-JITTER, JITTER, 2) * size
    lo, hi = side / 2, size - side / 2
    return Placed(**attrs, cx=float(np.clip(x, lo, hi)), cy=float(np.clip(y, lo, hi)), side=side)


def _overlap(a: Placed, b: Placed, gap: float) -> bool:
    """Whether two bounding boxes come closer than `gap` pixels."""
    al, at, ar, ab = a.box()
    bl, bt, br, bb = b.box()
    return not (ar + gap <= bl or br + gap <= al or ab + gap <= bt or bb + gap <= at)


def relation_holds(a: Placed, b: Placed, relation: str, margin: float) -> bool:
    """Whether `a REL b` holds between the centers by at least `margin` pixels."""
    dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
    return {"above": dy, "below": -dy, "left of": dx, "right of": -dx}[relation] >= margin


def _matches(obj: dict[str, str], combo: dict[str, str]) -> bool:
    """Whether an object has every attribute of a held-out combination."""
    return all(obj.get(k) == v for k, v in combo.items())


def _fill(rng: np.random.Generator, partial: dict[str, str]) -> dict[str, str]:
    """Complete an object's attributes with uniform draws for the missing ones."""
    pools = {"shape": SHAPES, "color": tuple(PALETTE), "size": tuple(SIZES), "cell": CELLS}
    return {k: partial[k] if k in partial else str(rng.choice(pools[k])) for k in ATTRIBUTES}


def layout(rng: np.random.Generator, spec: dict[str, Any], size: int) -> list[Placed]:
    """Place a (possibly partial) spec's objects: inside the canvas, apart, relation held.

    Args:
        rng: the sample's generator.
        spec: {"objects": [...], "relation": ...}; unstated attributes are drawn uniformly.
        size: canvas side in pixels.
    """
    objects, relation = spec["objects"], spec.get("relation")
    for _ in range(MAX_TRIES):
        placed = [_place(rng, _fill(rng, o), size) for o in objects]
        if len(placed) == 1:
            return placed
        a, b = placed
        if not _overlap(a, b, GAP * size) and relation_holds(
            a, b, relation, RELATION_MARGIN * size
        ):
            return placed
    raise ValueError(
        f"cannot place {spec} on a {size} x {size} canvas (objects too large to "
        f"satisfy the relation without overlap)"
    )


def render(placed: Sequence[Placed], size: int = 32) -> Image.Image:
    """Draw placed objects on a black canvas, without anti-aliasing: an RGB PIL image.

    Args:
        placed: objects with pixel centers and sides.
        size: canvas side S.
    """
    canvas = np.zeros((size, size, 3), np.uint8)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centers
    for o in placed:
        h = o.side / 2
        if o.shape == "circle":
            mask = (xs - o.cx) ** 2 + (ys - o.cy) ** 2 <= h * h
        elif o.shape == "square":
            mask = (np.abs(xs - o.cx) <= h) & (np.abs(ys - o.cy) <= h)
        else:  # apex up, base = height = side: the half-width grows by 1/2 per pixel down
            top = o.cy - h
            mask = (ys >= top) & (ys <= o.cy + h) & (np.abs(xs - o.cx) <= (ys - top) / 2)
        canvas[mask] = PALETTE[o.color]
    return Image.fromarray(canvas, "RGB")


def describe(obj: dict[str, str]) -> str:
    """An object's noun phrase from the attributes its spec states: "a large red circle"."""
    words = [w for w in (obj.get("size"), obj["color"], obj["shape"]) if w]
    phrase = " ".join(words)
    article = "an" if phrase[0] in "aeiou" else "a"
    cell = f" {CELL_PHRASES[obj['cell']]}" if "cell" in obj else ""
    return f"{article} {phrase}{cell}"


def caption_for(spec: dict[str, Any], template: str = "{}") -> str:
    """The caption of a spec, through one paraphrase template.

    Args:
        spec: {"objects": [...], "relation": ...}.
        template: a format string with one `{}` for the scene's description.
    """
    objects = spec["objects"]
    text = describe(objects[0])
    if spec.get("relation"):
        text += f" {RELATION_PHRASES[spec['relation']]} {describe(objects[1])}"
    return template.format(text)


def sample_scene(
    rng: np.random.Generator, num_objects: int, size: int
) -> tuple[list[Placed], str | None]:
    """Draw a scene's objects and relation and place them.

    Two-object captions never state cells, so the layout draws the cells that fit the relation.
    """
    objects = [_fill(rng, {}) for _ in range(num_objects)]
    if num_objects == 2:
        objects = [{k: v for k, v in o.items() if k != "cell"} for o in objects]
    relation = str(rng.choice(RELATIONS)) if num_objects == 2 else None
    return layout(rng, {"objects": objects, "relation": relation}, size), relation


def attributes(obj: Placed) -> dict[str, str]:
    """The attributes of a placed object, as a full spec object."""
    return {k: getattr(obj, k) for k in ATTRIBUTES}


def _stated(rng: np.random.Generator, obj: dict[str, str], num_objects: int) -> dict[str, str]:
    """The attributes a caption states: shape and color always; size often; cell alone only."""
    stated = {"shape": obj["shape"], "color": obj["color"]}
    if rng.random() < (0.7 if num_objects == 1 else 0.4):
        stated["size"] = obj["size"]
    if num_objects == 1 and rng.random() < 0.8:
        stated["cell"] = obj["cell"]
    return {k: stated[k] for k in ATTRIBUTES if k in stated}


def make_sample(
    index: int,
    seed: int = 0,
    size: int = 32,
    num_objects: int | None = None,
    holdout: Sequence[dict] | None = None,
    split: str = "train",
) -> dict[str, Any]:
    """Sample `index` of the world with seed `seed`: image, caption, spec and layout.

    Args:
        index: the sample's index; with the seed it fixes everything about the sample.
        seed: the data set's seed.
        size: canvas side S (32 or 64).
        num_objects: 1, 2, or None for either with equal odds.
        holdout: attribute combinations (e.g. {"color": "purple", "shape": "triangle"}) that
            the "train" split never contains and every "holdout" sample does.
        split: "train" or "holdout".

    Returns:
        {"image": PIL RGB, "caption": str, "spec": {"objects": [...], "relation": ...},
        "layout": [Placed, ...]}.
    """
    if split not in ("train", "holdout"):
        raise ValueError(f"split={split!r}: use 'train' or 'holdout'")
    if split == "holdout" and not holdout:
        raise ValueError("split='holdout' needs a non-empty holdout list")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
    for _ in range(MAX_TRIES):
        n = num_objects or int(rng.integers(1, 3))
        placed, relation = sample_scene(rng, n, size)
        held = any(_matches(attributes(o), c) for o in placed for c in holdout or [])
        if held == (split == "holdout"):
            break
    else:
        raise ValueError(f"holdout={holdout} leaves no scene for split={split!r}")
    spec = {"objects": [_stated(rng, attributes(o), n) for o in placed], "relation": relation}
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return {
        "image": render(placed, size),
        "caption": caption_for(spec, template),
        "spec": spec,
        "layout": placed,
    }


def render_spec(spec: dict[str, Any], size: int = 32, seed: int = 0) -> Image.Image:
    """Render any (possibly partial) spec, drawing what it leaves out; the relation holds.

    Args:
        spec: {"objects": [...], "relation": ...} as in a sample's spec.
        size: canvas side S.
        seed: seeds the attributes and placement the spec leaves free.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    return render(layout(rng, spec, size), size)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a float tensor (3, H, W) in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (H, W, 3)
    return array.permute(2, 0, 1).float() / 127.5 - 1.0


class ShapesDataset(Dataset):
    """The shapes world as a torch data set, rendered on the fly (nothing is stored).

    Args:
        n: number of samples.
        seed: the data set's seed (disjoint seeds give independent samples).
        size: canvas side S (32 or 64).
        num_objects: 1, 2, or None for a mix.
        holdout: attribute combinations kept out of split "train" (see `make_sample`).
        split: "train" or "holdout".
        transform: applied to the PIL image instead of the default [-1, 1] tensor conversion.
    """

    has_spec = True  # every sample carries its structured spec (the judge reads it)

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: int = 32,
        num_objects: int | None = None,
        holdout: Sequence[dict] | None = None,
        split: str = "train",
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        self.n, self.seed, self.size = n, seed, size
        self.num_objects, self.holdout, self.split = num_objects, holdout, split
        self.transform = transform or to_tensor

    def __len__(self) -> int:
        return self.n

    @property
    def description(self) -> dict[str, Any]:
        """What fixes the samples (for cache keys): the world, n, seed, size, mix, holdout."""
        return {
            "dataset": "shapes",
            "n": self.n,
            "seed": self.seed,
            "size": self.size,
            "num_objects": self.num_objects,
            "holdout": self.holdout,
            "split": self.split,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        s = make_sample(index, self.seed, self.size, self.num_objects, self.holdout, self.split)
        return {
            "pixel_values": self.transform(s["image"]),
            "caption": s["caption"],
            "spec": s["spec"],
        }


def export(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 32,
    num_objects: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write n samples as PNGs plus metadata.jsonl (file_name, caption, spec): an image folder.

    Args:
        out: the folder (created; it must be new or empty, unless `overwrite`).
        n: number of images (>= 1).
        seed: the data seed.
        size: canvas side S.
        num_objects: 1, 2, or None for a mix.
        overwrite: replace an earlier export in `out` (the files its metadata.jsonl lists and
            the metadata itself are removed first; other files are left, and refused).

    Raises:
        ValueError: n < 1, `out` a file, or a folder that holds something (an earlier export
            without `overwrite`, or files that are not an export).
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"--n {n}: must be at least 1")
    if check_export_dir(out, overwrite):
        clear_export(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n - 1)))
    with (out / "metadata.jsonl").open("w") as meta:
        for i in tqdm(range(n), desc="export", unit="img"):
            s = make_sample(i, seed, size, num_objects)
            name = f"{i:0{width}d}.png"
            s["image"].save(out / name)
            meta.write(
                json.dumps({"file_name": name, "caption": s["caption"], "spec": s["spec"]}) + "\n"
            )
    return out


def clear_export(out: Path) -> None:
    """Remove an earlier export from `out`; a ValueError when `out` also holds files that the
    export did not write (they are left, and nothing is removed)."""
    meta = out / "metadata.jsonl"
    listed = {json.loads(line)["file_name"] for line in meta.read_text().splitlines() if line}
    others = [p.name for p in out.iterdir() if p.name not in listed | {"metadata.jsonl"}]
    if others:
        raise ValueError(
            f"{out}: holds {others[0]}, which the earlier export did not write; choose a new folder"
        )
    for name in listed:
        (out / name).unlink(missing_ok=True)
    meta.unlink()


def main(argv: list[str] | None = None) -> int:
    """`python -m t2i.data.shapes export DIR --n N [--seed S] [--size 32] [--num-objects K]`;
    bad input is a one-line error and exit status 2."""
    parser = shapes_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        export(args.dir, args.n, args.seed, args.size, args.num_objects, args.overwrite)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info("wrote %d images to %s", args.n, args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
