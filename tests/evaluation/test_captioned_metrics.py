"""The captioned suite's measures on hand-built embeddings, features and tokenizers, and its
held-out split and evaluation-CLIP cache key on a small exported data set."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from t2i.config import ExperimentConfig
from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import export
from t2i.evaluation.captioned import (
    ClipImageFeatures,
    StyleClassifier,
    clip_distances,
    data_fingerprint,
    eval_clip_key,
    evaluate_captioned,
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


def test_parts_of_heldout_json_are_indices_within_the_held_out_samples(folder, tmp_path):
    data = CaptionedDataset(folder, 16)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    parts = {"cells": ["00003.png", "00011.png"], "concepts": ["00011.png", "00027.png"]}
    record = {"seed": 0, "held_out": ["00003.png", "00011.png", "00027.png"], "parts": parts}
    (pipe / "heldout.json").write_text(json.dumps(record))
    split = heldout_split(data, pipe)
    root = folder.resolve()
    named = {
        part: [relative_source(data.records[i]["source"], root) for i in indices]
        for part, indices in split.parts.items()
    }
    assert named == parts and set(split.parts["cells"]) <= set(split.heldout)
    for bad, says in [
        ({"cells": ["00004.png"]}, "part 'cells' lists sources that are not held out"),
        ({"heldout": ["00003.png"]}, "part 'heldout': the suite names its own parts so"),
        (["00003.png"], "held_out must be a list of sources and parts a dict of them"),
        ({"cells": "00003.png"}, "`parts` is not a dict of source lists"),
    ]:
        (pipe / "heldout.json").write_text(json.dumps({**record, "parts": bad}))
        with pytest.raises(ValueError, match=re.escape(says)):
            heldout_split(data, pipe)
    (pipe / "heldout.json").write_text(
        json.dumps({k: v for k, v in record.items() if k != "parts"})
    )
    assert heldout_split(data, pipe).parts == {}  # an older file: no parts


def clusters(n: int, seed: int, k: int = 3, d: int = 16) -> tuple[torch.Tensor, list[str]]:
    """n unit embeddings in k linearly separable clusters (one style each) and their styles."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(k, (n,), generator=g)
    centres = 6 * torch.eye(k, d)
    embeds = F.normalize(centres[label] + torch.randn(n, d, generator=g), dim=-1)
    return embeds, [f"style{i}" for i in label.tolist()]


def test_the_style_classifier_is_right_on_separable_embeddings_and_at_chance_on_shuffled():
    embeds, styles = clusters(300, seed=0)
    test, truth = clusters(600, seed=1)
    classifier = StyleClassifier.fit(embeds, styles)
    assert classifier.styles == ["style0", "style1", "style2"]
    assert classifier.right(test, truth) > 0.98
    assert classifier.right(test[:1], [None]) is None  # only labelled images count
    again = StyleClassifier.fit(embeds, styles)
    assert torch.equal(again.weight, classifier.weight)  # no randomness in the fit
    # labels shuffled: each fit maps the clusters to styles at random, a third right on average
    shuffled = []
    for seed in range(8):
        order = torch.randperm(300, generator=torch.Generator().manual_seed(seed)).tolist()
        shuffled.append(StyleClassifier.fit(embeds, [styles[i] for i in order]).right(test, truth))
    assert 0.2 < sum(shuffled) / len(shuffled) < 0.47


# ---- the suite on a styled data set, a stand-in evaluation CLIP and route --------------------

STYLES = ("red", "green", "blue")  # each image is bright in its style's channel


def styled_folder(root, styled: bool = True):
    """30 noisy 8 px images, concepts c0..c9 in each style (metadata with a `style` field when
    `styled`); captions "cK, STYLE style"."""
    g = torch.Generator().manual_seed(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for concept in range(10):
        for k, style in enumerate(STYLES):
            pixels = torch.randint(0, 100, (8, 8, 3), generator=g, dtype=torch.uint8)
            pixels[..., k] += 150
            name = f"images/c{concept}-{style}.png"
            Image.fromarray(pixels.numpy()).save(root / name)
            caption = [f"c{concept}, {style} style", f"c{concept}"]
            rows.append({"file_name": name, "caption": caption, "concept": f"c{concept}"})
            rows[-1] |= {"style": style, "skin_tone": None} if styled else {}
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


class OracleCLIP(torch.nn.Module):
    """A stand-in evaluation CLIP: an image's embedding is its channel means (the style) beside
    a fixed random projection of its pixels; a caption's is that of its real image."""

    def __init__(self, data: CaptionedDataset) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 13, bias=False)
        torch.nn.init.normal_(self.proj.weight, std=0.1, generator=torch.Generator().manual_seed(0))
        self.captions = [r["caption"][0] for r in data.records]
        real = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
        self.table = self.encode_image(real)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(
            torch.cat([4 * images.mean((2, 3)), self.proj(images.flatten(1))], 1), dim=-1
        )

    def tokenize(self, captions: list[str], warn: bool = True) -> torch.Tensor:
        return torch.tensor([self.captions.index(c) for c in captions])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


class CopyRoute:
    """A stand-in route: draws each caption's real image, its channels rolled (another style)
    for the captions of concept `wrong`."""

    def __init__(self, data: CaptionedDataset, wrong: str) -> None:
        self.images = {r["caption"][0]: data[i]["pixel_values"] for i, r in enumerate(data.records)}
        self.wrong = wrong

    def set_progress_bar_config(self, **kwargs) -> None:
        pass

    def __call__(self, prompts, num_images_per_prompt, generator, output_type, **kwargs):
        drawn = [
            self.images[p].roll(1, 0) if p.startswith(self.wrong) else self.images[p]
            for p in prompts
        ]
        settings = SimpleNamespace(as_dict=lambda: kwargs)
        return SimpleNamespace(images=(torch.stack(drawn) + 1) / 2, settings=settings)


def suite(root, split: dict, n: int = 100) -> dict:
    """The captioned suite of a CopyRoute on the data set at `root`, with `split` as the
    pipeline's heldout.json."""
    data = CaptionedDataset(root, 8)
    (root / "pipe").mkdir(exist_ok=True)
    (root / "pipe" / "heldout.json").write_text(json.dumps(split))
    route = CopyRoute(data, wrong="c9")
    bundle = SimpleNamespace(
        routes=["copy"], route=lambda name: route, image_tokenizer=RoundingTokenizer()
    )
    clip = OracleCLIP(data)
    return evaluate_captioned(bundle, clip, data, heldout_split(data, root / "pipe"), n, seed=0)


EMOJI_PARTS = {  # cells: one style (red); concepts: c9 in every style; one sample in two parts
    "cells": ["images/c0-red.png", "images/c1-red.png", "images/c2-red.png"],
    "concepts": ["images/c9-red.png", "images/c9-green.png", "images/c9-blue.png"],
    "skin_tones": ["images/c8-green.png", "images/c8-blue.png", "images/c9-blue.png"],
}
HELD_OUT = sorted({s for part in EMOJI_PARTS.values() for s in part})


def test_each_part_is_scored_on_its_own_images_and_drawn_real_images_reach_the_ceiling(tmp_path):
    report = suite(styled_folder(tmp_path / "data"), {"held_out": HELD_OUT, "parts": EMOJI_PARTS})
    assert report["n"] == {"train": 22, "cells": 3, "concepts": 3, "skin_tones": 3, "heldout": 8}
    assert sorted(report["heldout_used"]) == HELD_OUT  # every part's images, each once
    assert len(report["floor_used"]) == 8 and not set(report["floor_used"]) & set(HELD_OUT)
    real, drawn = report["real"], report["routes"]["copy"]
    assert report["style_classifier"]["styles"] == sorted(STYLES)
    assert report["style_classifier"]["images"] == 22
    for part in ("train", "cells", "concepts", "skin_tones"):
        assert real[f"r_precision_{part}"] == 1.0 and real[f"style_right_{part}"] == 1.0
    # cells and training captions: the real images drawn, the real ceiling reached
    for part in ("train", "cells"):
        assert drawn[f"r_precision_{part}"] == real[f"r_precision_{part}"]
        assert drawn[f"style_right_{part}"] == real[f"style_right_{part}"]
    # c9: the right picture in another style, never the caption's style
    assert drawn["style_right_concepts"] == 0.0 and drawn["r_precision_concepts"] < 1.0
    assert drawn["style_right_skin_tones"] == pytest.approx(2 / 3)  # c8 twice, c9 once
    assert "r_precision_heldout" not in drawn and drawn["images"] == 22 + 9
    assert real["clip_fid_floor"] > 0 and drawn["clip_fid"] > 0


def test_n_counts_the_captions_of_each_part(tmp_path):
    report = suite(
        styled_folder(tmp_path / "data"), {"held_out": HELD_OUT, "parts": EMOJI_PARTS}, n=2
    )
    counts = report["n"]
    assert {k: counts[k] for k in ("train", "cells", "concepts", "skin_tones")} == dict.fromkeys(
        ("train", "cells", "concepts", "skin_tones"), 2
    )
    assert counts["heldout"] == len(report["heldout_used"]) == len(set(report["heldout_used"]))
    assert 5 <= counts["heldout"] <= 6 and report["routes"]["copy"]["images"] == 8
    assert len(report["floor_used"]) == counts["heldout"]  # from all 22 training images


OLD_KEYS = {  # the report's keys before held-out parts and styles
    "top": {"split", "n", "r_precision_candidates", "heldout_used", "floor_used", "real"}
    | {"routes", "image_tokenizer"},
    "n": {"train", "heldout"},
    "real": {"r_precision_train", "r_precision_heldout", "clip_fid_floor", "clip_kid_floor"},
    "route": {"settings", "r_precision_train", "r_precision_heldout", "clip_fid", "clip_kid"}
    | {"images", "seconds", "images_per_s"},
}


@pytest.mark.parametrize("styled", [False, True])
def test_a_heldout_json_without_parts_gives_the_keys_it_gave_before(tmp_path, styled):
    data = styled_folder(tmp_path / "data", styled)
    report = suite(data, {"data_path": str(data), "seed": 0, "num_val": 8, "held_out": HELD_OUT})
    style = {"real": {"style_right_train", "style_right_heldout"}} if styled else {}
    assert set(report) == OLD_KEYS["top"] | ({"style_classifier"} if styled else set())
    assert report["n"] == {"train": 22, "heldout": 8}
    assert set(report["real"]) == OLD_KEYS["real"] | style.get("real", set())
    route = report["routes"]["copy"]
    assert set(route) == OLD_KEYS["route"] | style.get("real", set())
    assert report["real"]["r_precision_heldout"] == 1.0


class RollingAutoencoder(RoundingTokenizer):
    """A stand-in autoencoder whose reconstructions have their channels rolled (another
    style in `styled_folder`), the pixels otherwise kept."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.roll(1, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def test_reconstructions_are_scored_as_the_ceiling_of_the_routes_through_them(tmp_path):
    data_dir = styled_folder(tmp_path / "data")
    data = CaptionedDataset(data_dir, 8)
    (data_dir / "pipe").mkdir()
    (data_dir / "pipe" / "heldout.json").write_text(json.dumps({"held_out": HELD_OUT}))
    route = CopyRoute(data, wrong="c9")
    bundle = SimpleNamespace(
        routes=["copy"], route=lambda name: route, image_tokenizer=RoundingTokenizer()
    )
    bundle.vae = RollingAutoencoder()
    split = heldout_split(data, data_dir / "pipe")
    report = evaluate_captioned(bundle, OracleCLIP(data), data, split, 100, seed=0)
    kept, rolled = report["image_tokenizer"]["reconstructed"], report["vae"]["reconstructed"]
    assert set(kept) == {"r_precision_train", "r_precision_heldout"} | {
        "style_right_train",
        "style_right_heldout",
    }
    assert kept["style_right_train"] == 1.0  # rounding keeps the style
    assert rolled["style_right_train"] == 0.0 and rolled["style_right_heldout"] == 0.0
    assert rolled["r_precision_train"] < kept["r_precision_train"]
