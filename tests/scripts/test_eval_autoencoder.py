"""scripts/eval_autoencoder.py: what the evaluation CLIP still reads of real images once an
autoencoder has reconstructed them, beside what it reads of the real ones."""

from __future__ import annotations

import json

import ldm_tiny
import pytest
import tiny
import torch
from conftest import load_script

from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import export
from t2i.models import CLIPModel

eval_autoencoder = load_script("eval_autoencoder")


class Perfect(torch.nn.Module):
    """An autoencoder that gives back what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, x):
        return x * self.scale

    def decode(self, z):
        return z


class Grey(Perfect):
    """One that keeps nothing."""

    def decode(self, z):
        return torch.zeros_like(z)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae")
    data = export(root / "data", n=40, seed=0, size=16)
    names = sorted(p.name for p in data.glob("*.png"))
    split = {"held_out": names[:8], "parts": {"a": names[:4], "b": names[4:8]}}
    (data / "heldout.json").write_text(json.dumps(split))
    torch.manual_seed(0)
    clip = CLIPModel(**{**tiny.CLIP, "image_size": 16, "patch_size": 4}).eval()
    clip.save_pretrained(root / "clip")
    return data, clip, root


def test_a_perfect_autoencoder_keeps_every_score_and_a_blank_one_keeps_none(world):
    data, clip, _ = world
    dataset = CaptionedDataset(data, 16)
    kept = eval_autoencoder.measure(Perfect(), clip, dataset, n=8, seed=0, batch_size=50)
    assert kept["n"] == {"train": 8, "a": 4, "b": 4} and kept["split"] == "heldout.json"
    assert kept["reconstructed"] == kept["real"] and kept["psnr"] > 60
    lost = eval_autoencoder.measure(Grey(), clip, dataset, n=8, seed=0, batch_size=50)
    assert lost["real"] == kept["real"] and lost["psnr"] < 20
    # every grey image ranks the captions alike: at most one of a part's images is right
    assert all(lost["reconstructed"][f"r_precision_{p}"] <= 0.25 for p in ("a", "b"))


def test_the_command_line_reads_a_saved_autoencoder_and_refuses_what_is_not_one(
    world, tmp_path, capsys
):
    data, _, root = world
    ldm_tiny.parts()["vae"].save_pretrained(tmp_path / "vae")
    argv = ["--data", str(data), "--eval-clip", str(root / "clip"), "--n", "4"]
    out = tmp_path / "r.json"
    assert eval_autoencoder.main([str(tmp_path / "vae"), *argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["reconstructed"]) == set(report["real"]) and report["psnr"] > 0
    capsys.readouterr()
    assert eval_autoencoder.main([str(tmp_path / "vae"), *argv, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # never over a report
    assert eval_autoencoder.main([str(root / "clip"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an autoencoder" in err
