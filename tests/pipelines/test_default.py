"""The default pipeline shipped in t2i/assets/default (built by scripts/build_default.py)."""

from __future__ import annotations

import torch
from conftest import load_script

import t2i
from t2i.data.shapes import CELLS, PALETTE, SHAPES, SIZES, render_spec
from t2i.evaluation import judge_many
from t2i.pipelines import DEFAULT_PIPELINE

PROMPT = "a large red circle in the center"
SPEC = {
    "objects": [{"shape": "circle", "color": "red", "size": "large", "cell": "center"}],
    "relation": None,
}


def test_the_default_is_shipped_in_float16_within_the_budget():
    files = [f for f in DEFAULT_PIPELINE.rglob("*") if f.is_file()]
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert weights and not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    from safetensors import safe_open

    for f in weights:
        with safe_open(f, "pt") as st:
            dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
        assert dtypes <= {"F16", "I64", "I32", "BOOL"}, (f, dtypes)  # buffers: counts, flags


def test_the_default_draws_what_the_prompt_says_far_more_often_than_chance():
    pipe = t2i.load_pipeline(device="cpu")
    # the settings measured best for it (docs/RESULTS.md), used when a call names none
    assert pipe.sampling_defaults == load_script("build_default").SAMPLING
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPT, num_images_per_prompt=16, generator=torch.Generator().manual_seed(0))
    scores = judge_many(out.images, [SPEC] * 16)
    # a scene drawn at random gets all four attributes right this often
    chance = 1 / (len(PALETTE) * len(SHAPES) * len(SIZES) * len(CELLS))
    assert scores["fidelity"] >= 0.5 > 20 * chance, scores


def test_the_default_carries_the_unclip_route_and_its_variations_keep_the_attributes():
    pipe = t2i.load_pipeline(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.has_unclip
    g = torch.Generator().manual_seed(0)
    drawn = pipe(PROMPT, num_images_per_prompt=16, generator=g, route="unclip").images
    chance = 1 / (len(PALETTE) * len(SHAPES) * len(SIZES) * len(CELLS))
    assert judge_many(drawn, [SPEC] * 16)["fidelity"] >= 0.5 > 20 * chance
    source = render_spec(SPEC)
    variations = pipe.variations(source, num_images=16, generator=g).images
    assert judge_many(variations, [SPEC] * 16)["fidelity"] >= 0.5
