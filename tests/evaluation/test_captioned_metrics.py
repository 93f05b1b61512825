"""The captioned suite's measures on hand-built embeddings, features and tokenizers, and its
held-out split and evaluation-CLIP cache key on a small exported data set."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from t2i.config import ExperimentConfig
from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import export
from t2i.evaluation.captioned import (
    ClipImageFeatures,
    clip_distances,
    data_fingerprint,
    eval_clip_key,
    heldout_split,
    r_precision,
    relative_source,
    tokenizer_report,
)
from t2i.nn.metrics import psnr


def unit(n: int, d: int = 32, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("captions", [150, 10, 2])  # 100 ranked; all of 10; the only other
def test_r_precision_is_one_when_each_image_is_its_caption_and_zero_when_off_by_one(captions):
    texts = unit(captions)
    true = torch.arange(captions).repeat(2)[:60]
    assert r_precision(texts[true], true, texts, seed=0) == 1.0
    # each image is the next caption's: never its own caption first (the draws skip the true
    # caption, so with 2 captions the one other is always ranked)
    shifted = texts[(true + 1) % captions]
    assert r_precision(shifted, true, texts, seed=0) == 0.0


def test_r_precision_counts_a_tie_as_a_miss_and_its_draws_are_seeded():
    texts = unit(50)
    texts[7] = texts[3]  # two captions with the same embedding
    true = torch.tensor([3] * 40)
    score = r_precision(texts[true], true, texts, candidates=20, seed=1)
    assert 0.0 < score < 1.0  # a miss exactly when caption 7 was among the draws
    assert score == r_precision(texts[true], true, texts, candidates=20, seed=1)
    noisy = unit(40, seed=5)
    scores = {r_precision(noisy, true, texts, candidates=5, seed=s) for s in range(6)}
    assert len(scores) > 1  # another seed, other draws


class PixelCLIP(torch.nn.Module):
    """A stand-in evaluation CLIP: a fixed random projection of the pixels, unit-normed; it
    keeps the images it was given."""

    def __init__(self, size: int = 8, dim: int = 12) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * size * size, dim)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        self.seen: list[torch.Tensor] = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images)
        return F.normalize(self.proj(images.flatten(1)), dim=-1)


def images(n: int, seed: int, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_clip_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    clip = PixelCLIP()
    features = ClipImageFeatures(clip, 8)
    assert features.num_features == 12
    real = images(200, seed=0)
    clip.seen.clear()
    same = clip_distances(features, real, real, batch_size=16)
    first = torch.cat(clip.seen[0:26:2])  # each batch goes to FID's extractor, then KID's
    assert torch.allclose(first, real, atol=1e-6)  # on [-1, 1] as they came, in their order
    assert abs(same["clip_fid"]) < 1e-3 and same["clip_kid"]["subset_size"] == 200
    other = clip_distances(features, images(200, seed=1), real)  # the same distribution
    shifted = clip_distances(features, (real + 0.6).clamp(-1, 1), real)
    assert shifted["clip_fid"] > 5 * other["clip_fid"] > 0
    assert shifted["clip_kid"]["mean"] > other["clip_kid"]["mean"]
    again = clip_distances(features, images(200, seed=1), real)
    assert again == other  # KID's subsets are seeded


class RoundingTokenizer(torch.nn.Module):
    """A stand-in tokenizer: each pixel value is a code, one of `num_tokens` levels on [-1, 1]."""

    num_tokens = 5

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 * (self.num_tokens - 1)).round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() / (self.num_tokens - 1) * 2 - 1


def test_tokenizer_report_gives_psnr_and_the_share_of_codes_used():
    x = images(6, seed=0).clamp(-0.7, 0.6)  # codes 1, 2, 3: 0 (-1) and 4 (+1) never occur
    tokenizer = RoundingTokenizer()
    report = tokenizer_report(tokenizer, x, batch_size=4)
    expected = psnr(tokenizer.decode(tokenizer.encode(x)), x).mean()
    assert report["psnr"] == pytest.approx(float(expected), rel=1e-5)
    assert report["codebook_usage"] == pytest.approx(3 / 5)
    assert 1.0 < report["perplexity"] <= 3.0 and report["images"] == 6


@pytest.fixture
def folder(tmp_path):
    return export(tmp_path / "data", n=30, seed=0, size=16)


def test_heldout_json_decides_the_held_out_samples(folder, tmp_path):
    data = CaptionedDataset(folder, 16)
    listed = ["00003.png", "00011.png", "00027.png"]
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    record = {"data_path": str(folder), "seed": 0, "num_val": 3, "held_out": listed}
    (pipe / "heldout.json").write_text(json.dumps(record))
    split = heldout_split(data, pipe, {"num_val": 10, "seed": 5})  # the file wins
    root = folder.resolve()
    sources = [relative_source(data.records[i]["source"], root) for i in split.heldout]
    assert split.source == "heldout.json" and sources == listed
    assert set(split.train).isdisjoint(split.heldout)
    assert sorted(split.train + split.heldout) == list(range(30))
    (pipe / "heldout.json").write_text(json.dumps({**record, "held_out": ["nope.png"]}))
    with pytest.raises(ValueError, match="none of its 1 held-out sources"):
        heldout_split(data, pipe)


def test_without_heldout_json_the_training_split_is_recomputed(folder, tmp_path):
    data = CaptionedDataset(folder, 16)
    split = heldout_split(data, tmp_path, {"num_val": 3, "seed": 5})
    _, val = data.split(3, 5)  # what training did with the prior's data config
    assert split.source == "recomputed"
    assert [data.records[i]["source"] for i in split.heldout] == [r["source"] for r in val.records]
    assert heldout_split(data, tmp_path, {"num_val": 3, "seed": 6}).heldout != split.heldout


def test_the_cache_key_follows_the_data_and_the_config(folder):
    config = ExperimentConfig(model={"type": "clip", "embed_dim": 16})
    key = eval_clip_key(config, CaptionedDataset(folder, 16))
    assert key == eval_clip_key(config, CaptionedDataset(folder, 16)) and len(key) == 16
    config.train.output_dir = "elsewhere"  # not part of the model
    assert eval_clip_key(config, CaptionedDataset(folder, 16)) == key
    config.train.max_steps += 1
    assert eval_clip_key(config, CaptionedDataset(folder, 16)) != key
    config.train.max_steps -= 1
    fingerprint = data_fingerprint(CaptionedDataset(folder, 16))
    meta = folder / "metadata.jsonl"
    meta.write_text(meta.read_text().replace('"a ', '"one ', 1))  # one caption changed
    assert data_fingerprint(CaptionedDataset(folder, 16)) != fingerprint
    changed = eval_clip_key(config, CaptionedDataset(folder, 16))
    (folder / "00004.png").write_bytes((folder / "00005.png").read_bytes() + b"\0")  # an image
    assert changed != key != eval_clip_key(config, CaptionedDataset(folder, 16)) != changed
