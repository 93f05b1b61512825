"""The judge is trustworthy: near 100% on clean and noisy renders, and it catches what is wrong."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import ImageFilter

from t2i.data.shapes import (
    CELLS,
    PALETTE,
    SHAPES,
    Placed,
    attributes,
    make_sample,
    render,
    to_tensor,
)
from t2i.evaluation import find_objects, judge, judge_many, prompt_fidelity
from t2i.evaluation.judge import label_components

N = 1000  # renders per setting


def full_spec(sample: dict) -> dict:
    """A spec stating every attribute of every object, so the judge must read them all."""
    return {
        "objects": [attributes(o) for o in sample["layout"]],
        "relation": sample["spec"]["relation"],
    }


def noisy(image, rng: np.random.Generator, sigma: float = 12.0) -> np.ndarray:
    x = np.asarray(image, np.float32) + rng.normal(0, sigma, (*image.size[::-1], 3))
    return np.clip(x, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("num_objects", [1, 2])
def test_judge_scores_clean_and_noisy_renders_at_least_99_percent(size, num_objects):
    samples = [make_sample(i, seed=11, size=size, num_objects=num_objects) for i in range(N)]
    specs = [full_spec(s) for s in samples]
    rng = np.random.default_rng(size + num_objects)
    assert prompt_fidelity([s["image"] for s in samples], specs) >= 0.99
    assert prompt_fidelity([noisy(s["image"], rng) for s in samples], specs) >= 0.99


@pytest.mark.parametrize("size", [32, 64])
def test_judge_tolerates_soft_edges(size):
    samples = [make_sample(i, seed=17, size=size) for i in range(300)]
    rng = np.random.default_rng(size)
    blurred = [s["image"].filter(ImageFilter.GaussianBlur(0.8 * size / 32)) for s in samples]
    specs = [full_spec(s) for s in samples]
    assert prompt_fidelity(blurred, specs) >= 0.98
    assert prompt_fidelity([noisy(im, rng) for im in blurred], specs) >= 0.98


def test_two_touching_objects_of_two_colors_are_split():
    a = Placed("square", "red", "large", "left", cx=6.5, cy=16.0, side=12.8)
    b = Placed("circle", "blue", "large", "center", cx=19.3, cy=16.0, side=12.8)  # boxes touch
    spec = {"objects": [attributes(a), attributes(b)], "relation": "left of"}
    assert judge(render([a, b]), spec)["ok"]


def test_labelling_matches_a_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((24, 24)) < 0.5
        labels = label_components(mask)
        assert (labels >= 0).sum() == mask.sum()
        for r, c in zip(*np.nonzero(mask), strict=True):  # 4-neighbours share a label
            for rr, cc in ((r + 1, c), (r, c + 1)):
                if rr < 24 and cc < 24 and mask[rr, cc]:
                    assert labels[rr, cc] == labels[r, c]
        for k in np.unique(labels[mask]):  # and each label is one connected piece
            assert _flood(mask, *np.argwhere(labels == k)[0]) == int((labels == k).sum())


def _flood(mask: np.ndarray, r: int, c: int) -> int:
    """The size of the 4-connected region of mask holding (r, c), by a plain flood fill."""
    seen, stack = {(r, c)}, [(r, c)]
    while stack:
        r, c = stack.pop()
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            inside = 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1]
            if inside and mask[rr, cc] and (rr, cc) not in seen:
                seen.add((rr, cc))
                stack.append((rr, cc))
    return len(seen)


def _changed(spec: dict, key: str, rng: np.random.Generator) -> dict:
    """The spec with one attribute of one object (or the relation) set to another value."""
    spec = copy.deepcopy(spec)
    if key == "relation":
        flip = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
        spec["relation"] = flip[spec["relation"]]
        return spec
    pools = {
        "color": list(PALETTE),
        "shape": list(SHAPES),
        "size": ["large", "small"],
        "cell": list(CELLS),
    }
    obj = spec["objects"][int(rng.integers(len(spec["objects"])))]
    obj[key] = str(rng.choice([v for v in pools[key] if v != obj[key]]))
    return spec


@pytest.mark.parametrize("key", ["color", "shape", "size", "cell", "relation"])
def test_judge_rejects_a_wrong_attribute(key):
    rng = np.random.default_rng(0)
    num_objects = 2 if key == "relation" else 1
    samples = [make_sample(i, seed=12, num_objects=num_objects) for i in range(200)]
    verdicts = [judge(s["image"], _changed(full_spec(s), key, rng)) for s in samples]
    assert sum(not v["ok"] for v in verdicts) / len(verdicts) >= 0.95
    assert sum(not v[key] for v in verdicts) / len(verdicts) >= 0.95


def test_an_extra_object_is_reported():
    hits = 0
    for i in range(100):
        two = make_sample(i, seed=13, num_objects=2)
        only_first = {"objects": [attributes(two["layout"][0])], "relation": None}
        verdict = judge(two["image"], only_first)
        hits += verdict["extra"] and not verdict["ok"]
    assert hits == 100


def test_a_missing_object_fails():
    s = make_sample(0, seed=14, num_objects=2)
    image = render(s["layout"][:1])
    verdict = judge(image, full_spec(s))
    assert not verdict["ok"] and verdict["found"] == 1


def test_an_empty_image_fails_and_finds_nothing():
    blank = np.zeros((32, 32, 3), np.uint8)
    assert find_objects(blank) == []
    assert not judge(blank, make_sample(0)["spec"])["ok"]


def test_tensors_arrays_and_pil_images_give_the_same_verdicts():
    s = make_sample(3, seed=15)
    spec = full_spec(s)
    tensor = to_tensor(s["image"])
    assert judge(tensor, spec) == judge(np.asarray(s["image"]), spec) == judge(s["image"], spec)
    with pytest.raises(TypeError, match="uint8"):
        judge(np.zeros((32, 32), np.float32), spec)


def test_judge_many_reports_per_attribute_rates():
    samples = [make_sample(i, seed=16, num_objects=1) for i in range(20)]
    images = [s["image"] for s in samples[:10]] + [torch.full((3, 32, 32), -1.0)] * 10
    result = judge_many(images, [full_spec(s) for s in samples])
    assert result["fidelity"] == pytest.approx(0.5) and result["n"] == 20
    assert result["color"] == pytest.approx(0.5) and result["extra"] == 0.0
    with pytest.raises(ValueError, match="2 images but 1 specs"):
        judge_many(images[:2], [samples[0]["spec"]])
