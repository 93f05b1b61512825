"""scripts/build_emoji.py: the shipped emoji pipeline's build refuses a corpus it must not
ship (no licences, or the style kept back for the fine-tuning measurement) before training."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

build_emoji = load_script("build_emoji")


def corpus(path, styles, licence=True):
    path.mkdir()
    rows = [{"file_name": f"images/{s}/a.png", "caption": "a", "style": s} for s in styles]
    (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if licence:
        (path / "LICENSE.md").write_text("# Licences\n")
    return path


@pytest.mark.parametrize(
    "styles, licence, says",
    [
        (["twemoji", "streamline-emojis"], True, "holds the streamline-emojis style"),
        (["twemoji"], False, "no metadata.jsonl and LICENSE.md"),
    ],
)
def test_a_corpus_it_must_not_ship_is_refused_before_training(
    styles, licence, says, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(build_emoji, "build_pipeline", pytest.fail)
    data = corpus(tmp_path / "data", styles, licence)
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "r")]
    assert build_emoji.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and str(data) in err
    assert not (tmp_path / "out").exists()


def test_the_build_is_the_recipe_with_the_ldm_route_and_the_licences_beside_it(
    tmp_path, monkeypatch
):
    data = corpus(tmp_path / "data", ["twemoji", "fxemoji"])
    (data / "licenses").mkdir()
    (data / "licenses" / "twemoji-LICENSE").write_text("CC-BY-4.0\n")
    seen = {}

    def build(recipe, train_one):  # what the recipe was asked for; the pipeline it writes
        stages = [s.name for s in recipe.stages]
        seen.update(stages=stages, data=recipe.data["path"], sampling=recipe.sampling)
        recipe.out.mkdir(parents=True)

    monkeypatch.setattr(build_emoji, "build_pipeline", build)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--out", str(out), "--runs", str(tmp_path / "r")]
    assert build_emoji.main([*argv, "--set", "ldm.train.max_steps=7"]) == 0
    assert seen["stages"] == ["clip", "autoencoder_kl", "ldm"] and seen["data"] == str(data)
    assert seen["sampling"]["ldm_guidance_scale"] == build_emoji.SAMPLING["ldm_guidance_scale"]
    assert (out / "LICENSE.md").read_text() == "# Licences\n"
    assert (out / "licenses" / "twemoji-LICENSE").is_file()
