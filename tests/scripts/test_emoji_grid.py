"""scripts/emoji_grid.py: real images over those a pipeline draws for their captions, part by
part of the pipeline's split, with the captions beside."""

from __future__ import annotations

import json

import ldm_tiny
import numpy as np
import torch
from conftest import load_script
from PIL import Image

from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import export
from t2i.pipelines import TextToImagePipeline

emoji_grid = load_script("emoji_grid")


def test_each_part_shows_its_real_images_over_the_images_drawn(tmp_path, capsys):
    data = export(tmp_path / "data", n=24, seed=0, size=16)
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(tmp_path / "pipe")
    records = CaptionedDataset(data, 16).records
    sources = sorted(r["source"].split("/")[-1] for r in records)
    held = {"held_out": sources[:6], "parts": {"cells": sources[:3], "concepts": sources[3:6]}}
    (tmp_path / "pipe" / "heldout.json").write_text(json.dumps(held))
    out = tmp_path / "grid.png"
    argv = ["--model", str(tmp_path / "pipe"), "--data", str(data), "--out", str(out), "--k", "3"]
    assert emoji_grid.main(argv) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    cell = 16 * 2 + 2  # enlarged twice, 2 px apart
    assert image.shape == (3 * 2 * cell, emoji_grid.LABEL + 3 * cell, 3)  # train, cells, concepts
    lines = out.with_suffix(".md").read_text().splitlines()
    cells = lines.index("## " + emoji_grid.NAMES["cells"])
    first = lines[cells + 2].split(". ", 1)[1]
    held_first = next(r for r in records if r["caption"][0] == first)
    assert held_first["source"].split("/")[-1] in held["parts"]["cells"]
    # the cells' first real image is that record's, enlarged; the image below it is drawn
    data16 = CaptionedDataset(data, 16)
    pixels = data16[records.index(held_first)]["pixel_values"]
    real = ((pixels + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    top = 2 * cell
    x = emoji_grid.LABEL
    shown = image[top : top + 32 : 2, x : x + 32 : 2]
    assert np.abs(shown.astype(int) - real.astype(int)).max() <= 1
    drawn = image[top + cell : top + cell + 32 : 2, x : x + 32 : 2]
    assert not np.array_equal(drawn, shown)
    capsys.readouterr()
    assert emoji_grid.main(argv) == 2  # never over an earlier grid
    assert "exists; pass --force" in capsys.readouterr().err
    assert emoji_grid.main([*argv, "--force"]) == 0


def test_a_drawn_image_is_what_generate_draws_for_its_seed(tmp_path):
    pipe = TextToImagePipeline(**ldm_tiny.parts()).route("ldm")
    pipe.set_progress_bar_config(disable=True)
    made = emoji_grid.draw(pipe, ["a red circle", "a blue square"], seed=7)
    one = [torch.Generator().manual_seed(8)]  # as generate draws it: one generator per image
    again = pipe("a blue square", num_images_per_prompt=1, generator=one, output_type="pt")
    assert torch.allclose(made[1], again.images[0].float() * 2 - 1, atol=1e-4)  # batch of 2 or 1
