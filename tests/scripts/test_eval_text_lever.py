"""scripts/eval_text_lever.py on a fake corpus (30 solid-colour 8 px images, three styles, a
heldout.json with parts): stand-in "oracle" CLIPs show which images each figure is computed
on, a tiny real CLIP gives figures in [0, 1], and bad input is refused before any model
loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import load_script
from PIL import Image

from t2i.models import CLIPModel

lever = load_script("eval_text_lever")

STYLES = ["alpha", "beta", "gamma"]
CONCEPTS = ["grinning face", "red apple", "star", "rocket", "waving hand", "fire", "cat", "tiger"]
HELD_CONCEPTS = {"cat", "tiger"}  # every image held out
HELD_CELLS = {("red apple", "alpha"), ("star", "beta")}
HELD_TONES = {("waving hand", "dark", "alpha"), ("waving hand", "dark", "gamma")}
PARAPHRASES = {  # four seen concepts, two held out
    "grinning face": "a happy face",
    "red apple": "a shiny red fruit",
    "star": "a yellow five-pointed shape",
    "waving hand": "a hand saying hello",
    "cat": "a kitten",
    "tiger": "a big striped cat",
}


def colour(k: int) -> tuple[int, int, int]:
    """Image k's solid colour (distinct for k < 36)."""
    return (20 + 40 * (k % 6), 20 + 40 * (k // 6), 128)


def corpus_rows() -> list[dict]:
    """The fake corpus's metadata rows: each concept in each style, and the waving hand in
    two skin tones; canonical captions distinct."""
    cells = [(c, None, s) for c in CONCEPTS for s in STYLES]
    cells += [("waving hand", t, s) for t in ("medium", "dark") for s in STYLES]
    rows = []
    for concept, tone, style in cells:
        name = concept.replace(" ", "-") + (f"-{tone}" if tone else "")
        label = f"{concept}: {tone} skin tone" if tone else concept
        rows.append(
            {
                "file_name": f"images/{style}/{name}.png",
                "caption": [f"{label}, {style} style", label],
                "concept": concept,
                "style": style,
                "skin_tone": tone,
            }
        )
    return rows


def held(row: dict) -> str | None:
    """The held-out part a row belongs to (None: a training image)."""
    if row["concept"] in HELD_CONCEPTS:
        return "concepts"
    if (row["concept"], row["style"]) in HELD_CELLS and row["skin_tone"] is None:
        return "cells"
    if (row["concept"], row["skin_tone"], row["style"]) in HELD_TONES:
        return "skin_tones"
    return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The fake corpus folder, its heldout.json and a paraphrase file (paraphrases.json)."""
    root = tmp_path_factory.mktemp("emoji")
    rows = corpus_rows()
    for k, row in enumerate(rows):
        (root / row["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour(k)).save(root / row["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    parts = {"cells": [], "concepts": [], "skin_tones": []}
    for row in rows:
        if held(row):
            parts[held(row)].append(row["file_name"])
    split = {"held_out": sum(parts.values(), []), "parts": parts, "concepts": sorted(HELD_CONCEPTS)}
    (root / "heldout.json").write_text(json.dumps(split))
    entries = [{"concept": c, "paraphrase": p} for c, p in PARAPHRASES.items()]
    (root / "paraphrases.json").write_text(json.dumps({"about": "test", "paraphrases": entries}))
    return root


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny untrained CLIPModel, saved."""
    import tiny

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "model"
    CLIPModel(**tiny.CLIP).save_pretrained(path)
    return path


class Oracle(torch.nn.Module):
    """A stand-in CLIP that knows the fake corpus: image k embeds as the one-hot e_k (read
    from its colour), a canonical caption as its image's, a paraphrase as the normalised sum
    over its concept's base-form images; an image `knows` rejects embeds as another
    concept's image (or another caption's), so its own texts score below another's."""

    def __init__(self, knows=lambda row: True) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the scripts read its device
        rows = corpus_rows()
        self.eye = torch.eye(len(rows))
        vectors = {row["caption"][0]: self.eye[k] for k, row in enumerate(rows)}
        for concept, paraphrase in PARAPHRASES.items():
            base = [k for k, r in enumerate(rows) if r["concept"] == concept and not r["skin_tone"]]
            vectors[paraphrase] = F.normalize(self.eye[base].sum(0), dim=0)
        self.texts, self.table = list(vectors), torch.stack(list(vectors.values()))
        shift = len(rows) // 2  # lands on another concept, or on another caption of its own
        self.rows = {
            colour(k): k if knows(row) else (k + shift) % len(rows) for k, row in enumerate(rows)
        }

    def tokenize(self, texts: list[str], warn: bool = True) -> torch.Tensor:
        return torch.tensor([self.texts.index(t) for t in texts])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        rgb = ((images.mean((2, 3)) + 1) * 127.5).round().long()  # (N, 3): the solid colour
        return self.eye[[self.rows[tuple(c.tolist())] for c in rgb]]


def run(corpus: Path, clip_dir: Path, out: Path, *extra: str) -> dict:
    """main() on the fake corpus; its JSON, from --out."""
    argv = [str(clip_dir), "--data", str(corpus), "--size", "8", "--out", str(out)]
    argv += ["--paraphrases", str(corpus / "paraphrases.json"), *extra]
    assert lever.main(argv) == 0
    return json.loads(out.read_text())


def test_an_oracle_ranks_every_right_text_first_and_a_blind_one_none(
    corpus, clip_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(lever, "load_clip", lambda path: Oracle())
    result = run(corpus, clip_dir, tmp_path / "oracle.json", "--n", "4")
    assert result["r_precision"] == {"train": 1.0, "cells": 1.0, "concepts": 1.0, "skin_tones": 1.0}
    assert result["paraphrase_r1"] == result["paraphrase_r1_seen"] == 1.0
    assert result["paraphrase_r1_heldout"] == 1.0
    counts = {"train": 4, "cells": 2, "concepts": 4, "skin_tones": 2}  # --n 4 caps two parts
    assert result["images"] == counts | {"paraphrase_seen": 12, "paraphrase_heldout": 6}
    assert result["r_precision_candidates"] == 30 and result["paraphrase_candidates"] == 6
    assert result["paraphrase_entries"] == {"seen": 4, "heldout": 2}

    monkeypatch.setattr(lever, "load_clip", lambda path: Oracle(knows=lambda row: False))
    blind = run(corpus, clip_dir, tmp_path / "blind.json")
    assert set(blind["r_precision"].values()) == {0.0}
    assert blind["paraphrase_r1"] == blind["paraphrase_r1_seen"] == 0.0
    assert blind["images"]["train"] == 20 and blind["images"]["concepts"] == 6  # all: n 256


def test_each_figure_is_computed_on_its_own_part(corpus, clip_dir, tmp_path, monkeypatch):
    """An oracle right only on held-out images scores 1 exactly where they are scored."""
    monkeypatch.setattr(
        lever, "load_clip", lambda path: Oracle(knows=lambda r: held(r) is not None)
    )
    result = run(corpus, clip_dir, tmp_path / "held.json")
    assert result["r_precision"] == {"train": 0.0, "cells": 1.0, "concepts": 1.0, "skin_tones": 1.0}
    assert result["paraphrase_r1_heldout"] == 1.0  # cat and tiger: all six images
    assert result["paraphrase_r1_seen"] == pytest.approx(2 / 12)  # the two held-out cells
    assert result["paraphrase_r1"] == pytest.approx(8 / 18)

    right_concepts = lambda r: r["concept"] in HELD_CONCEPTS  # noqa: E731
    monkeypatch.setattr(lever, "load_clip", lambda path: Oracle(knows=right_concepts))
    result = run(corpus, clip_dir, tmp_path / "concepts.json")
    assert result["r_precision"] == {"train": 0.0, "cells": 0.0, "concepts": 1.0, "skin_tones": 0.0}
    assert (result["paraphrase_r1_seen"], result["paraphrase_r1_heldout"]) == (0.0, 1.0)


def test_a_tiny_clip_gives_figures_in_the_unit_interval(corpus, clip_dir, tmp_path, capsys):
    result = run(corpus, clip_dir, tmp_path / "tiny.json", "--n", "8", "--seed", "1")
    assert json.loads(capsys.readouterr().out) == result  # printed as written
    figures = [*result["r_precision"].values(), result["paraphrase_r1"]]
    figures += [result["paraphrase_r1_seen"], result["paraphrase_r1_heldout"]]
    assert all(0.0 <= f <= 1.0 for f in figures)
    assert result["clip_data_heldout"] == "unknown" and result["seconds"] >= 0


def test_bad_input_is_refused_before_any_model_loads(
    corpus, clip_dir, tmp_path, monkeypatch, capsys
):
    def never(path):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(lever, "load_clip", never)
    no_split = tmp_path / "no_split"
    no_split.mkdir()
    (no_split / "metadata.jsonl").write_text((corpus / "metadata.jsonl").read_text())
    (tmp_path / "taken.json").write_text("{}")
    stranger = tmp_path / "stranger.json"
    entries = [{"concept": "unicorn", "paraphrase": "a horse with a horn"}]  # not in the corpus
    entries += [{"concept": "cat", "paraphrase": "a kitten"}]
    stranger.write_text(json.dumps({"paraphrases": entries}))
    cases = {
        "CLIP_DIR": [str(tmp_path / "missing"), "--data", str(corpus)],
        "--data": [str(clip_dir), "--data", str(no_split)],
        "--out": [str(clip_dir), "--data", str(corpus), "--out", str(tmp_path / "taken.json")],
        "--paraphrases": [str(clip_dir), "--data", str(corpus), "--paraphrases", str(stranger)],
    }
    for flag, argv in cases.items():
        assert lever.main(argv) == 2, flag
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {flag} ") and "\n" not in err, err
    assert (tmp_path / "taken.json").read_text() == "{}"


def test_the_shipped_paraphrase_file_is_well_formed():
    entries = lever.read_paraphrases(lever.PARAPHRASES)  # distinct concepts and wordings
    assert 100 <= len(entries) <= 150
    assert all(set(e) == {"concept", "paraphrase"} for e in entries)
    pairs = [(e["concept"], e["paraphrase"]) for e in entries]
    assert len(set(pairs)) == len(pairs)
    assert all(c != p for c, p in pairs)
