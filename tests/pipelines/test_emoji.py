"""The emoji pipeline shipped in t2i/assets/emoji (built by scripts/build_emoji.py), and the
budget every shipped pipeline shares."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import check_shipped_weights

import t2i
from t2i.cli import ASSETS, shipped
from t2i.pipelines import LatentDiffusionPipeline

EMOJI = ASSETS / "emoji"
BUDGET_MIB = 128  # every shipped pipeline together (2^20-byte MiB)
KEPT_BACK = "streamline-emojis"  # the style left out of the build: fine-tuning is measured on it
# training captions of four concepts unlike each other, in one style
PROMPTS = [
    "red apple, twemoji style",
    "automobile, twemoji style",
    "dog face, twemoji style",
    "rocket, twemoji style",
]
SOURCES = [f"images/twemoji/{p.split(',')[0].replace(' ', '-')}.png" for p in PROMPTS]
N = 2  # images per prompt


@pytest.fixture(scope="module")
def emoji():
    """The shipped emoji pipeline, by its name, float32 on the CPU."""
    pipe = t2i.load_pipeline("emoji", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_every_shipped_pipeline_is_float16_safetensors_within_the_assets_budget():
    assert {"default", "emoji"} <= set(shipped())
    for name in shipped():
        check_shipped_weights(ASSETS / name)
    assert sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file()) <= BUDGET_MIB * 2**20


def test_the_emoji_pipeline_carries_the_licence_of_every_style_it_learnt():
    split = json.loads((EMOJI / "heldout.json").read_text())
    # the sources name their style's folder: images/STYLE/NAME.png
    styles = {s.split("/")[-2] for s in split["held_out"]}
    assert len(styles) >= 5 and KEPT_BACK not in styles
    licence = (EMOJI / "LICENSE.md").read_text()
    for style in styles:
        assert re.search(rf"@iconify-json/{re.escape(style)}@\d", licence), style
    assert KEPT_BACK not in licence
    assert {"cldr-annotations-full-LICENSE"} <= {f.name for f in (EMOJI / "licenses").iterdir()}


def test_the_emoji_pipeline_draws_the_emoji_its_prompt_names(emoji):
    assert isinstance(emoji, LatentDiffusionPipeline)
    held_out = set(json.loads((EMOJI / "heldout.json").read_text())["held_out"])
    assert not held_out & set(SOURCES)  # the prompts are captions it trained on
    generator = [torch.Generator().manual_seed(i) for i in range(N * len(PROMPTS))]
    with torch.no_grad():
        images = emoji(PROMPTS, num_images_per_prompt=N, generator=generator, output_type="pt")
        pixels = images.images * 2 - 1  # [0, 1] -> CLIP's [-1, 1]
        image_embeds = emoji.clip.encode_image(pixels)
        text_embeds = emoji.clip.encode_text(emoji.clip.tokenize(PROMPTS))
    # its own CLIP ranks each image's prompt first among the four (chance: 1 in 4)
    ranked = (image_embeds @ text_embeds.T).argmax(dim=1)
    own = torch.arange(len(PROMPTS)).repeat_interleave(N)
    assert (ranked == own).float().mean() >= 0.75, ranked.tolist()
