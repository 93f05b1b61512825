"""CLIP trained and scored through the command lines, on a tiny config."""

from __future__ import annotations

import json

import tiny

from t2i import evaluate, train
from t2i.models import CLIPModel
from t2i.training import read_metrics

TINY_CLIP = [
    *tiny.CLIP_ARGS,
    *tiny.DATA,
    "train.batch_size=32",
    "train.learning_rate=2e-3",
]


def test_clip_trains_and_is_scored_with_its_held_out_combinations(tmp_path):
    out = tmp_path / "clip"
    assert (
        train.main(
            [
                "configs/shapes/clip.yaml",
                *TINY_CLIP,
                "train.max_steps=40",
                f"train.output_dir={out}",
            ]
        )
        == 0
    )
    rows = read_metrics(out / "logs" / "metrics.csv")
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"logit_scale", "accuracy"} <= rows[0].keys()
    assert CLIPModel.from_pretrained(out / "model").config.embed_dim == 16

    report = tmp_path / "clip.json"
    assert evaluate.main([str(out), "--n", "24", "--batch-size", "12", "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert set(result["zero_shot"]) == {"color", "shape", "size", "cell"}
    assert all(0.0 <= v <= 1.0 for v in result["zero_shot"].values())
    assert result["retrieval"]["recall@1"] <= result["retrieval"]["recall@5"]
    held = result["holdout"]
    assert held["combinations"][0] == {"color": "purple", "shape": "triangle"}
    assert held["gap"]["color"] == held["seen"]["color"] - held["unseen"]["color"]


def test_a_context_length_that_differs_from_the_data_is_refused(tmp_path, capsys):
    args = [
        "configs/shapes/clip.yaml",
        *TINY_CLIP,
        "data.context_length=16",
        f"train.output_dir={tmp_path}",
    ]
    assert train.main(args) == 2
    assert "model.context_length=32 but data.context_length=16" in capsys.readouterr().err


def test_clip_fine_tunes_on_relation_hard_negatives_from_a_trained_clip(tmp_path):
    base, tuned = tmp_path / "clip", tmp_path / "tuned"
    common = [*TINY_CLIP, "train.max_steps=4", "data.num_objects=2"]
    assert train.main(["configs/shapes/clip.yaml", *common, f"train.output_dir={base}"]) == 0
    args = ["configs/shapes/clip_relations.yaml", *common, f"train.output_dir={tuned}"]
    assert train.main([*args, f"init_from={base}"]) == 0
    rows = read_metrics(tuned / "logs" / "metrics.csv")
    assert all(0.0 <= r["hard_negative_accuracy"] <= 1.0 for r in rows)
    assert all(r["loss"] > r["hard_negative_loss"] > 0.0 for r in rows)
    report = tmp_path / "tuned.json"
    assert evaluate.main([str(tuned), "--n", "12", "--batch-size", "12", "--out", str(report)]) == 0
    assert 0.0 <= json.loads(report.read_text())["relation_accuracy"] <= 1.0


def test_hard_negatives_are_refused_for_other_models_and_unknown_kinds(tmp_path, capsys):
    out = f"train.output_dir={tmp_path}"
    assert train.main(["configs/shapes/vae.yaml", "data.hard_negatives=relations", out]) == 2
    assert "only CLIP reads hard negatives, not model.type='vae'" in capsys.readouterr().err
    args = ["configs/shapes/clip.yaml", *TINY_CLIP, "data.hard_negatives=colors", out]
    assert train.main(args) == 2
    assert "data.hard_negatives='colors': expected one of relations" in capsys.readouterr().err
