"""scripts/eval_paraphrases.py: a pipeline asked for concepts in words its captions never
used, judged by the evaluation CLIP against the concepts' names."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import load_script
from PIL import Image

from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import PALETTE
from t2i.evaluation.captioned import heldout_split

eval_paraphrases = load_script("eval_paraphrases")
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
RGB = {c: PALETTE[c] for c in COLOURS}  # the shapes world's colours, far apart
ENTRIES = [{"concept": f"{c} disc", "paraphrase": f"a round thing in {c}"} for c in COLOURS]


class ColourJudge(torch.nn.Module):
    """A perfect evaluation CLIP for the discs: an image's embedding is its colour (one-hot,
    uniform for grey), a caption's the colour it names."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to read

    def tokenize(self, captions, warn=False):
        return torch.tensor([[next(k for k, c in enumerate(COLOURS) if c in t)] for t in captions])

    def encode_text(self, ids):
        return torch.nn.functional.one_hot(ids[:, 0], len(COLOURS)).float()

    def encode_image(self, images):
        rgb = (images.mean((2, 3)) + 1) / 2 * 255  # (N, 3)
        table = torch.tensor([RGB[c] for c in COLOURS], dtype=torch.float32)
        near = torch.cdist(rgb, table) < 10
        embeds = torch.where(near.any(1, keepdim=True), near.float(), torch.ones_like(near.float()))
        return torch.nn.functional.normalize(embeds, dim=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("para")
    rows = []
    for c in COLOURS:
        for k in range(2):
            name = f"{c}{k}.png"
            Image.new("RGB", (16, 16), RGB[c]).save(root / name)
            rows.append(
                {
                    "file_name": name,
                    "caption": [f"{c} disc, flat style", f"{c} disc"],
                    "concept": f"{c} disc",
                    "skin_tone": None,
                }
            )
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = ["orange0.png", "orange1.png", "purple0.png", "purple1.png"]  # two concepts unseen
    (root / "heldout.json").write_text(json.dumps({"held_out": held}))
    data = CaptionedDataset(root, 16)
    judge = ColourJudge()
    return data, heldout_split(data, root), judge


class Painter:
    """A stand-in pipeline: for a prompt naming a colour, that colour's disc; else grey."""

    def __call__(self, prompts, num_images_per_prompt, generator, output_type):
        assert num_images_per_prompt == 1 and len(generator) == len(prompts)
        images = torch.full((len(prompts), 3, 16, 16), 0.5)
        for i, prompt in enumerate(prompts):
            colour = next((c for c in COLOURS if c in prompt), None)
            if colour:
                images[i] = torch.tensor(RGB[colour]).view(3, 1, 1) / 255
        return SimpleNamespace(images=images)


class Grey(Painter):
    def __call__(self, prompts, num_images_per_prompt, generator, output_type):
        return SimpleNamespace(images=torch.full((len(prompts), 3, 16, 16), 0.5))


def test_a_pipeline_that_draws_each_concept_scores_as_its_real_images(world):
    data, split, judge = world
    report = eval_paraphrases.measure(Painter(), judge, data, split, ENTRIES, images=2, seed=0)
    assert report["entries"] == {"seen": 4, "heldout": 2}
    for group in ("seen", "heldout"):  # the judge reads every real disc's colour
        assert report[f"paraphrase_r1_{group}"] == report[f"name_r1_{group}"] == 1.0
        assert report[f"real_name_r1_{group}"] == 1.0
    grey = eval_paraphrases.measure(Grey(), judge, data, split, ENTRIES, images=2, seed=0)
    assert grey["real_name_r1_seen"] == report["real_name_r1_seen"]
    assert grey["paraphrase_r1_seen"] == grey["name_r1_heldout"] == 0.0  # grey: no colour wins


def test_entries_whose_concepts_the_data_lacks_are_left_out(world):
    data, split, judge = world
    entries = [*ENTRIES[:3], {"concept": "black disc", "paraphrase": "a dark round thing"}]
    report = eval_paraphrases.measure(Painter(), judge, data, split, entries, images=1, seed=0)
    assert report["entries"] == {"seen": 3, "heldout": 0} and report["name_r1_heldout"] is None
