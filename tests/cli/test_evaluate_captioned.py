"""`python -m t2i.evaluate PIPELINE --suite captioned --data DIR` on a tiny pipeline and a
small exported data set, with a tiny evaluation CLIP trained for a few seconds."""

from __future__ import annotations

import json
import shutil
import time

import ldm_tiny
import pytest
import tiny
import torch
import yaml
from conftest import tiny_pipeline

from t2i import TextToImagePipeline, evaluate
from t2i.data.captioned import CaptionedDataset
from t2i.data.shapes import export
from t2i.evaluation.captioned import Judge
from t2i.models import load_model

TINY_EVAL_CLIP = {
    "model": {"type": "clip", **tiny.CLIP, "image_size": 32, "patch_size": 8},  # 4 x 4 patches
    "data": {"num_val": 1, "context_length": 32},
    "train": {
        "seed": 1234,
        "max_steps": 80,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "warmup_steps": 5,
        "log_every": 20,
        "sample_every": 100000,
        "checkpoint_every": 100000,
    },
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, saved_pipeline):
    """The data set (48 images), the eval CLIP config, its cache, and the first run's JSON."""
    root = tmp_path_factory.mktemp("captioned")
    data = export(root / "data", n=48, seed=0, size=16)
    config = root / "eval_clip.yaml"
    config.write_text(yaml.safe_dump(TINY_EVAL_CLIP))
    flags = ["--eval-clip-cache", str(root / "cache"), "--eval-clip-config", str(config)]
    argv = [str(saved_pipeline), "--suite", "captioned", "--data", str(data), "--n", "16"]
    start = time.perf_counter()
    report = run(argv + flags, root / "first.json")
    return dict(
        root=root,
        data=data,
        flags=flags,
        argv=argv + flags,
        report=report,
        seconds=time.perf_counter() - start,
    )


def run(argv: list[str], out) -> dict:
    assert evaluate.main([*argv, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_report_has_every_measure_of_real_and_generated_images(world):
    report = world["report"]
    assert report["suite"] == "captioned" and report["split"] == "recomputed"
    assert report["n"] == {"train": 16, "heldout": 4}  # 48 // 10 held out (DataConfig's 512)
    assert report["r_precision_candidates"] == 48  # fewer than 100 distinct captions: all
    real = report["real"]
    assert {"r_precision_train", "r_precision_heldout", "clip_fid_floor", "clip_kid_floor"} <= set(
        real
    )
    assert {"mean", "std"} <= set(real["clip_kid_floor"])
    dalle = report["routes"]["dalle"]
    for key in ("r_precision_train", "r_precision_heldout"):
        assert 0.0 <= dalle[key] <= 1.0 and 0.0 <= real[key] <= 1.0
    assert dalle["clip_fid"] > 0 and dalle["images"] == 20 and dalle["images_per_s"] > 0
    assert dalle["settings"]["rerank"] == 0  # never reranked by the pipeline's CLIP
    # the untrained pipeline's images are further from the real held-out ones than real
    # training images are
    assert dalle["clip_fid"] > real["clip_fid_floor"]
    tokenizer = report["image_tokenizer"]
    assert tokenizer["psnr"] > 0 and 0 < tokenizer["codebook_usage"] <= 1
    assert 1 <= tokenizer["perplexity"] <= 32 and "vae" not in report
    # the floor's real images are training images, none of them held out
    assert len(report["floor_used"]) == 4
    assert set(report["floor_used"]).isdisjoint(report["heldout_used"])


def test_the_eval_clip_ranks_real_images_captions_better_than_noise(world):
    clip = load_model(world["report"]["eval_clip"]).eval()
    assert clip.config.image_size == 16  # the pipeline's image size
    assert clip.config.patch_size == 4  # the config's 4 x 4 patch grid, kept at 16 px
    data = CaptionedDataset(world["data"], 16)
    judge = Judge(clip, data, batch_size=50, seed=0)
    real = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
    captions = [r["caption"][0] for r in data.records]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert judge.r_precision(real, captions) > judge.r_precision(noise, captions) + 0.25
    assert world["report"]["real"]["r_precision_train"] > 0.25  # well above 1 / 48


def test_the_eval_clip_is_trained_once_and_reused_per_data_set(world, monkeypatch, tmp_path):
    model = world["report"]["eval_clip"]
    weights = next(
        p for p in (world["root"] / "cache").rglob("*.safetensors") if "model" in p.parts
    )
    before = (weights.stat().st_mtime_ns, weights.read_bytes())

    def no_training(config, where):
        raise AssertionError(f"trained again into {config.train.output_dir}")

    monkeypatch.setattr(evaluate, "_train_one", no_training)
    start = time.perf_counter()
    again = run(world["argv"], tmp_path / "again.json")
    assert again["eval_clip"] == model and time.perf_counter() - start < world["seconds"]
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == before
    assert again["real"] == world["report"]["real"]  # seeded: the same figures
    # one caption changed: another data set, another evaluation CLIP folder
    changed = tmp_path / "changed"
    shutil.copytree(world["data"], changed)
    meta = changed / "metadata.jsonl"
    meta.write_text(meta.read_text().replace('"a ', '"one ', 1))
    folders = []

    def record(config, where):
        folders.append(config.train.output_dir)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(evaluate, "_train_one", record)
    argv = [world["argv"][0], "--suite", "captioned", "--data", str(changed), *world["flags"]]
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(argv)
    assert folders and folders[0] != str(world["root"] / "cache" / model.split("/")[-2])
    assert folders[0].startswith(str(world["root"] / "cache"))


def test_heldout_json_decides_which_real_images_are_held_out(world, saved_pipeline, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    listed = ["00001.png", "00010.png", "00020.png", "00030.png", "00040.png"]
    split = {"data_path": str(world["data"]), "seed": 0, "num_val": 5, "held_out": listed}
    (pipe / "heldout.json").write_text(json.dumps(split))
    argv = [str(pipe), "--suite", "captioned", "--data", str(world["data"]), "--n", "16"]
    report = run([*argv, "--eval-clip", world["report"]["eval_clip"]], tmp_path / "r.json")
    assert report["split"] == "heldout.json" and report["heldout_used"] == listed
    assert report["n"]["heldout"] == 5 and set(report["floor_used"]).isdisjoint(listed)


def test_split_flag_scores_a_pipeline_on_another_data_sets_held_out_images(
    world, saved_pipeline, tmp_path, capsys
):
    # a pipeline trained elsewhere: its own heldout.json names none of this data set's images
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    (pipe / "heldout.json").write_text(json.dumps({"held_out": ["elsewhere/0.png"]}))
    argv = [str(pipe), "--suite", "captioned", "--data", str(world["data"]), "--n", "4"]
    argv += ["--eval-clip", world["report"]["eval_clip"]]
    assert evaluate.main(argv) == 2
    assert "none of its 1 held-out sources" in capsys.readouterr().err
    listed = ["00002.png", "00012.png", "00022.png"]
    split = tmp_path / "theirs.json"
    split.write_text(json.dumps({"held_out": listed}))
    report = run([*argv, "--split", str(split)], tmp_path / "r.json")
    assert report["split"] == str(split) and report["heldout_used"] == listed
    assert set(report["floor_used"]).isdisjoint(listed)
    assert evaluate.main([*argv, "--split", str(tmp_path / "missing.json")]) == 2
    assert "--split" in capsys.readouterr().err


def test_named_held_out_parts_are_scored_each_with_n_captions(world, saved_pipeline, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    parts = {
        "cells": ["00001.png", "00010.png", "00020.png"],
        "concepts": ["00030.png", "00040.png"],
    }
    split = {"seed": 0, "held_out": parts["cells"] + parts["concepts"], "parts": parts}
    (pipe / "heldout.json").write_text(json.dumps(split))
    argv = [str(pipe), "--suite", "captioned", "--data", str(world["data"]), "--n", "2"]
    report = run([*argv, "--eval-clip", world["report"]["eval_clip"]], tmp_path / "r.json")
    assert report["n"] == {"train": 2, "cells": 2, "concepts": 2, "heldout": 4}
    assert len(report["heldout_used"]) == len(report["floor_used"]) == 4
    dalle = report["routes"]["dalle"]
    for key in ("r_precision_train", "r_precision_cells", "r_precision_concepts"):
        assert 0.0 <= dalle[key] <= 1.0 and 0.0 <= report["real"][key] <= 1.0
    assert "r_precision_heldout" not in dalle and dalle["images"] == 6
    assert "style_right_cells" not in dalle  # the shapes export has no styles


def test_each_route_is_scored_and_the_latent_autoencoder_too(world, tmp_path):
    base = tiny_pipeline(unclip=True)
    parts = {
        k: base.components[k] for k in ("image_tokenizer", "prior", "diffusion_prior", "decoder")
    }
    TextToImagePipeline(**parts, **ldm_tiny.parts()).save_pretrained(tmp_path / "pipe")
    argv = [str(tmp_path / "pipe"), "--suite", "captioned", "--data", str(world["data"])]
    argv += ["--n", "4", "--routes", "unclip", "ldm", "--eval-clip", world["report"]["eval_clip"]]
    report = run(argv, tmp_path / "r.json")
    assert set(report["routes"]) == {"unclip", "ldm"}
    assert report["routes"]["unclip"]["settings"]["prior_candidates"] == 1  # no CLIP choice
    assert report["routes"]["ldm"]["images"] == 8 and report["vae"]["psnr"] > 0


@pytest.mark.parametrize(
    "data, says",
    [
        (None, "needs --data"),
        ("missing", "--data {path}: no such file or folder"),
        ("empty", "--data {path}: an empty folder (no images, no captions)"),
        ("uncaptioned", "--data {path}: no usable samples"),
    ],
)
def test_bad_data_is_a_one_line_error_before_any_training(
    data, says, saved_pipeline, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(evaluate, "_train_one", pytest.fail)
    (tmp_path / "empty").mkdir()
    (tmp_path / "uncaptioned").mkdir()
    (tmp_path / "uncaptioned" / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "caption": ""}\n'
    )
    path = tmp_path / data if data else None
    argv = [str(saved_pipeline), "--suite", "captioned", *(["--data", str(path)] if path else [])]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says.format(path=path) in err


def test_a_route_the_pipeline_lacks_is_refused(world, saved_pipeline, capsys):
    argv = [str(saved_pipeline), "--suite", "captioned", "--data", str(world["data"])]
    assert evaluate.main([*argv, "--routes", "ldm", "--eval-clip", str(world["data"])]) == 2
    assert "--routes ldm" in capsys.readouterr().err


def test_grids_show_the_real_images_above_those_drawn_for_their_captions(world, tmp_path):
    from PIL import Image

    grids = tmp_path / "grids"
    report = run([*world["argv"], "--grids", str(grids)], tmp_path / "r.json")
    image = Image.open(grids / "dalle_heldout.png")
    # 4 held-out images: one row each of real and drawn, 16 px cells and 1 px padding
    assert image.size == (1 + 4 * 17, 1 + 2 * 17)
    data = CaptionedDataset(world["data"], 16)
    first = report["heldout_used"][0]
    record = next(i for i, r in enumerate(data.records) if r["source"].endswith(first))
    real = ((data[record]["pixel_values"] + 1) / 2 * 255).round().byte().permute(1, 2, 0)
    cell = torch.from_numpy(__import__("numpy").array(image.convert("RGB")))[1:17, 1:17]
    assert (cell.int() - real.int()).abs().max() <= 1  # the top-left cell is that image
    captions = (grids / "dalle_heldout.txt").read_text().splitlines()
    assert captions[0] == f"0: {data.records[record]['caption'][0]}"
    assert evaluate.main([*world["argv"], "--grids", str(grids)]) == 2  # never overwritten


def test_sampling_flag_scores_other_settings_than_the_recorded_ones(world, tmp_path):
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(tmp_path / "pipe")
    argv = [str(tmp_path / "pipe"), "--suite", "captioned", "--data", str(world["data"])]
    argv += ["--n", "4", "--eval-clip", world["report"]["eval_clip"]]
    recorded = run(argv, tmp_path / "a.json")["routes"]["ldm"]["settings"]
    argv += ["--sampling", "ldm_guidance_scale=4", "ldm_num_inference_steps=3"]
    changed = run(argv, tmp_path / "b.json")["routes"]["ldm"]["settings"]
    assert (changed["guidance_scale"], changed["num_inference_steps"]) == (4.0, 3)
    assert (recorded["guidance_scale"], recorded["num_inference_steps"]) != (4.0, 3)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_t2i_sampling"]["ldm_guidance_scale"] == recorded["guidance_scale"]  # unsaved


@pytest.mark.parametrize(
    "pair, says",
    [
        ("ldm_guidance_scale", "give NAME=VALUE"),
        ("guidance=4", "records no 'guidance'"),
        ("ldm_guidance_scale=high", "ldm_guidance_scale takes a number"),
        ("ldm_guidance_scale=-1", "must be a finite number >= 0"),
        ("ldm_num_inference_steps=2.5", "takes a whole number (recorded"),
        ("ldm_sampler=heun", "use one of"),
    ],
)
def test_bad_sampling_pairs_are_one_line_errors_before_scoring(
    pair, says, world, tmp_path, monkeypatch, capsys
):
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(tmp_path / "pipe")
    monkeypatch.setattr(evaluate, "evaluate_captioned", pytest.fail)
    argv = [str(tmp_path / "pipe"), "--suite", "captioned", "--data", str(world["data"])]
    argv += ["--eval-clip", world["report"]["eval_clip"], "--sampling", pair]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--sampling {pair!r}" in err and says in err
