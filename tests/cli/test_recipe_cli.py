"""The from-scratch recipe: `python -m t2i.train configs/custom/pipeline.yaml data.path=DIR
image_size=S output_dir=OUT` trains every stage on a captioned folder and writes a pipeline."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from t2i import train
from t2i.data.captioned import CaptionedDataset
from t2i.models import VQVAE
from t2i.pipelines import PipelineFormatError, load_pipeline
from t2i.recipe import build_pipeline, load_recipe, stage_config

RECIPE = "configs/custom/pipeline.yaml"
TINY = [  # every stage at a size that trains in a second
    "max_steps=3",
    "train.batch_size=8",
    "train.sample_every=100",
    "train.checkpoint_every=100",
    "train.warmup_steps=1",
    "data.num_val=8",
    "vqvae.model.embed_dim=8",
    "vqvae.model.codebook_size=32",
    "clip.model.embed_dim=16",
    "clip.model.vision_width=32",
    "clip.model.vision_layers=1",
    "clip.model.vision_heads=2",
    "clip.model.text_width=32",
    "clip.model.text_layers=1",
    "clip.model.text_heads=2",
    *(
        f"{s}.model.{k}"
        for s in ("prior", "diffusion_prior", "decoder", "maskgit")
        for k in ("dim=32", "depth=1", "heads=2")
    ),
    "autoencoder_kl.model.norm_num_groups=4",
    "ldm.model.block_out_channels=[16,32]",
    "ldm.model.attention_head_dim=8",
    "ldm.model.norm_num_groups=8",
]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
SIZES = [(40, 30), (48, 48), (30, 60), (64, 40)]  # any size and aspect


def make_folder(path, n=80):
    """A captioned folder: coloured discs and squares of several sizes and aspects, two or
    three captions each (metadata.jsonl)."""
    (path / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % 3]
        shape = ["disc", "square"][(i // 3) % 2]
        w, h = SIZES[i % len(SIZES)]
        image = Image.new("RGB", (w, h), (255, 255, 255))
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=COLOURS[colour])
        name = f"images/{i:03d}.png"
        image.save(path / name)
        captions = [f"a {colour} {shape}", f"{colour}, {shape}", f"a {shape} in {colour} {i}"]
        rows.append({"file_name": name, "caption": captions[: 2 + i % 2]})
    (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One recipe build at 32 px, every route, on an 80-image folder."""
    root = tmp_path_factory.mktemp("recipe")
    data, out = make_folder(root / "data"), root / "out"
    argv = [RECIPE, f"data.path={data}", "image_size=32", f"output_dir={out}", *TINY]
    assert train.main(argv) == 0
    return data, out, argv


def test_the_recipe_writes_a_pipeline_of_every_route_at_the_asked_size(built):
    data, out, _ = built
    for route in ("dalle", "unclip", "ldm", "maskgit"):
        pipe = load_pipeline(out, device="cpu", route=route)
        pipe.set_progress_bar_config(disable=True)
        kw = {"num_inference_steps": 2} if route != "dalle" else {}
        images = pipe("a red disc", num_images_per_prompt=1, output_type="pt", **kw).images
        assert images.shape == (1, 3, 32, 32)
    # the preset's tokenizer for 32 px (f4) and the prior's grid taken from it
    config = json.loads((out / "image_tokenizer" / "config.json").read_text())
    assert config["image_size"] == 32 and config["channels"] == [32, 64]
    assert json.loads((out / "prior" / "config.json").read_text())["grid_sizes"] == [8]
    assert json.loads((out / "prior" / "config.json").read_text())["num_tokens"] == 32


def test_a_latent_diffusion_recipe_trains_no_tokenizer_or_prior(tmp_path):
    data, out = make_folder(tmp_path / "data", n=40), tmp_path / "out"
    parts = {"cells": ["images/003.png", "images/017.png"], "concepts": ["images/020.png"]}
    listed = sorted(f for files in parts.values() for f in files)
    (data / "heldout.json").write_text(json.dumps({"held_out": listed, "parts": parts}))
    argv = [RECIPE, f"data.path={data}", f"output_dir={out}", "model.routes=[ldm]", *TINY]
    assert train.main(argv) == 0
    split = json.loads((out / "heldout.json").read_text())  # the data set's own split
    assert sorted(split["held_out"]) == listed and split["parts"] == parts
    stages = sorted(p.name for p in (out / "runs").iterdir() if p.name != "token_cache")
    assert stages == ["autoencoder_kl", "clip", "ldm"]
    assert not (out / "image_tokenizer").exists() and not (out / "prior").exists()
    index = json.loads((out / "model_index.json").read_text())
    assert index["_t2i_routes"] == ["ldm"] and index["prior"] == [None, None]
    pipe = load_pipeline(out, device="cpu")  # its one route, with no route named
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a red disc", num_images_per_prompt=1, num_inference_steps=2, output_type="pt")
    assert images.images.shape == (1, 3, 32, 32)


def test_the_build_report_has_every_stage_capped_with_a_validation_loss(built):
    _, out, _ = built
    report = json.loads((out / "build_report.json").read_text())["stages"]
    assert list(report) == [
        "vqvae",
        "clip",
        "prior",
        "diffusion_prior",
        "decoder",
        "autoencoder_kl",
        "ldm",
        "maskgit",
    ]
    for name, row in report.items():
        assert row["steps"] == 3, name  # max_steps=3 capped the stage's 1,500+
        assert row["val/loss"] > 0, name
        assert (out / "runs" / name / "validation.json").is_file()
    assert row["samples"]  # the denoiser's last sample grid


def test_the_held_out_split_is_written_and_no_stage_trained_on_it(built):
    data, out, _ = built
    split = json.loads((out / "heldout.json").read_text())
    held = set(split["held_out"])
    assert len(held) == 8
    train_set, val_set = CaptionedDataset(data, 32).split(8, 0)
    assert held == {r["source"].split(f"{data}/")[1] for r in val_set.records}
    assert not held & {r["source"].split(f"{data}/")[1] for r in train_set.records}


def test_every_caption_of_an_image_is_read(built):
    data, _, _ = built
    records = CaptionedDataset(data, 32).records
    assert {len(r["caption"]) for r in records} == {2, 3}
    sample = CaptionedDataset(data, 32)
    seen = {sample[1]["caption"] for _ in range(40)}
    assert len(seen) == 3  # drawn from all three captions of the image


def test_a_second_build_keeps_the_stages_and_a_changed_caption_retrains_them(built, tmp_path):
    data, out, argv = built
    stamp = (out / "runs" / "vqvae" / "model").stat().st_mtime
    assert train.main(argv) == 0  # the same inputs: every stage kept
    assert (out / "runs" / "vqvae" / "model").stat().st_mtime == stamp
    report = json.loads((out / "build_report.json").read_text())["stages"]
    assert {row["state"] for row in report.values()} == {"kept"}
    meta = data / "metadata.jsonl"
    meta.write_text(meta.read_text().replace("a red disc", "a crimson disc", 1))
    try:
        assert train.main([*argv, "vqvae.train.max_steps=2"]) == 0
    finally:
        meta.write_text(meta.read_text().replace("a crimson disc", "a red disc", 1))
    report = json.loads((out / "build_report.json").read_text())["stages"]
    assert {row["state"] for row in report.values()} == {"retrained"}
    assert report["vqvae"]["steps"] == 2
    assert (out / "runs" / "vqvae.1" / "model").stat().st_mtime == stamp  # the earlier, kept
    index = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert index["prior"]["reads"]["image_tokenizer"] == index["image_tokenizer"]["id"]


def test_a_build_stopped_part_way_resumes_with_the_stages_it_finished(tmp_path):
    data, out = make_folder(tmp_path / "data", n=40), tmp_path / "out"
    recipe = load_recipe(RECIPE, [f"data.path={data}", f"output_dir={out}", *TINY])
    trained = []

    def stop_at_prior(config, where):
        if "[prior]" in where:
            raise KeyboardInterrupt  # killed while training the prior
        trained.append(where)
        return train.run(config, where)

    with pytest.raises(KeyboardInterrupt):
        build_pipeline(recipe, stop_at_prior)
    assert len(trained) == 2
    mtime = (out / "runs" / "clip" / "model").stat().st_mtime
    trained.clear()
    build_pipeline(recipe, lambda config, where: trained.append(where) or train.run(config, where))
    assert [w.split("[")[1] for w in trained][0] == "prior]"  # vqvae and clip kept
    assert (out / "runs" / "clip" / "model").stat().st_mtime == mtime


def test_presets_are_listed_and_the_64px_preset_keeps_an_8x8_grid(tmp_path, capsys):
    assert train.main([RECIPE, "--preset"]) == 0
    listing = capsys.readouterr().out
    assert "cpu:" in listing and "gpu:" in listing and "256 px" in listing
    recipe = load_recipe(RECIPE, ["data.path=x", "image_size=64", f"output_dir={tmp_path}"])
    vq = stage_config(recipe, recipe.stages[0], {})
    assert vq.model["image_size"] == 64  # the recipe's size, not the stage file's 32
    tokenizer = VQVAE(**{k: v for k, v in vq.model.items() if k != "type"})
    assert tokenizer.grid_size == 8
    prior = stage_config(recipe, recipe.stages[2], {"tokenizer": tokenizer})
    assert prior.model["grid_sizes"] == [8] and prior.model["num_tokens"] == 512
    gpu = load_recipe(RECIPE, ["data.path=x", "image_size=64", "model.preset=gpu"])
    assert stage_config(gpu, gpu.stages[0], {}).model["codebook_size"] == 1024


@pytest.mark.parametrize(
    "args, named",
    [
        (["--preset", "tpu"], "model.preset='tpu'"),
        (["image_size=48"], "data.image_size=48"),
        (["prior.model.depht=2"], "depht"),
        (["model.routes=[dalle,gan]"], "model.routes"),
    ],
)
def test_bad_recipe_input_is_one_line_naming_it(args, named, tmp_path, capsys):
    argv = [RECIPE, f"data.path={tmp_path}", f"output_dir={tmp_path / 'o'}", *args]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing trained


def test_a_missing_data_folder_and_a_foreign_output_folder_are_refused(tmp_path, capsys):
    assert train.main([RECIPE, f"data.path={tmp_path / 'none'}", f"output_dir={tmp_path}/o"]) == 2
    assert "data.path=" in capsys.readouterr().err
    data = make_folder(tmp_path / "data", n=20)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert train.main([RECIPE, f"data.path={data}", f"output_dir={tmp_path / 'mine'}"]) == 2
    assert "train.output_dir=" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert train.main(["configs/shapes/vae.yaml", "--preset"]) == 2
    assert "--preset" in capsys.readouterr().err


def test_a_small_data_set_gets_a_warning_before_training(tmp_path, caplog):
    data = make_folder(tmp_path / "data", n=40)
    recipe = load_recipe(RECIPE, [f"data.path={data}", f"output_dir={tmp_path / 'o'}", *TINY])
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        build_pipeline(recipe, lambda config, where: (_ for _ in ()).throw(KeyboardInterrupt))
    assert "40 images, under 1000" in caplog.text and "memorise" in caplog.text


def test_loading_refuses_components_that_disagree(built, tmp_path):
    _, out, _ = built
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed, ignore=shutil.ignore_patterns("runs"))
    load_pipeline(mixed, device="cpu")  # as built: loads
    weights = mixed / "decoder" / "diffusion_pytorch_model.safetensors"
    saved = weights.read_bytes()
    tensors = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(weights).items()}
    save_file(tensors, weights)  # a decoder trained elsewhere, dropped into this pipeline
    with pytest.raises(PipelineFormatError, match="its decoder holds other weights"):
        load_pipeline(mixed, device="cpu", route="unclip")
    weights.write_bytes(saved)
    index_path = mixed / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_t2i_provenance"]["decoder"]["reads"]["clip"] = "0" * 16  # read another CLIP
    index_path.write_text(json.dumps(index))
    with pytest.raises(PipelineFormatError, match="its decoder was trained on another clip"):
        load_pipeline(mixed, device="cpu", route="unclip")
    load_pipeline(mixed, device="cpu", route="dalle")  # a route without the decoder still loads


def test_a_recipe_pipeline_fine_tunes_and_the_new_one_records_what_it_read(built, tmp_path):
    data, out, _ = built
    tuned = tmp_path / "tuned"
    argv = [
        "configs/custom/finetune.yaml",
        f"data.path={data}",
        f"init_from={out}",
        f"output_dir={tuned}",
        "model.stages=[clip]",
        "model.downstream=retrain",
        "max_steps=2",
        "data.image_size=32",
        *TINY[1:6],
    ]
    assert train.main(argv) == 0
    before = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    after = json.loads((tuned / "model_index.json").read_text())["_t2i_provenance"]
    assert after["vae"]["id"] == before["vae"]["id"]  # reads no CLIP: kept as it was
    assert after["clip"]["id"] != before["clip"]["id"]
    for name in ("prior", "diffusion_prior", "decoder", "unet"):  # they read CLIP: retrained
        assert after[name]["reads"]["clip"] == after["clip"]["id"], name
    assert after["unet"]["reads"]["vae"] == before["vae"]["id"]
    load_pipeline(tuned, device="cpu", route="ldm")
