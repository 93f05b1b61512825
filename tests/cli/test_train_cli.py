"""`python -m t2i.train`, called through `main([...])` on tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i import train
from t2i.config import checker, load_config
from t2i.models import VAE, build_model
from t2i.recipe import is_recipe, load_recipe, read_presets
from t2i.training import read_metrics
from t2i.training.stages import COMPONENTS

CONFIGS = sorted(  # training configs; configs/accelerate/ holds launch configs, sweeps/ the
    p  # sweeps of scripts/sweep_ldm.py
    for p in Path(__file__).resolve().parents[2].glob("configs/**/*.yaml")
    if p.parent.name not in ("accelerate", "sweeps") and p.name != "presets.yaml"
)
TINY_VAE = [
    "model.channels=[8, 16]",
    "model.latent_dim=8",
    "data.num_train=512",
    "data.num_val=8",
    "train.batch_size=16",
    "train.num_samples=8",
    "train.learning_rate=3e-3",
    "train.warmup_steps=10",
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_builds_its_model(path):
    if is_recipe(path):  # a whole pipeline: every stage's config reads and its model builds
        for preset in [None, *read_presets(path)]:
            recipe = load_recipe(path, [f"model.preset={preset}" if preset else "model.runs=x"])
            assert {s.trains for s in recipe.stages} == set(COMPONENTS), preset
        return
    config = load_config(path)
    if config.model["type"] == "pipeline":  # fine-tuning: stages of a saved pipeline
        assert set(config.model["stages"]) <= set(COMPONENTS)
        return
    model = build_model(config.model, checker(str(path)))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert model.config.get("image_size", config.data.image_size) == config.data.image_size


def test_a_few_hundred_steps_on_shapes_lower_the_loss(tmp_path):
    out = tmp_path / "vae"
    code = train.main(
        [
            "configs/shapes/vae.yaml",
            *TINY_VAE,
            "train.max_steps=200",
            f"train.output_dir={out}",
            "train.log_every=20",
            "train.sample_every=100",
            "train.checkpoint_every=100",
        ]
    )
    assert code == 0
    rows = read_metrics(out / "logs" / "metrics.csv")
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5  # per-dimension nats
    assert rows[-1]["elbo_nats"] > rows[0]["elbo_nats"]
    for name in ("inputs", "reconstructions", "samples", "traversal"):
        assert (out / "samples" / f"{name}_0000200.png").is_file()
    assert (out / "samples" / "captions.txt").read_text().startswith("0: ")
    assert load_config(out / "config.yaml").train.max_steps == 200
    model = VAE.from_pretrained(out / "model")
    x = torch.zeros(2, 3, 32, 32)
    assert model.decode(model.encode(x)[0]).shape == x.shape


def test_resume_latest_continues_a_run_to_more_steps(tmp_path):
    out = tmp_path / "vae"
    common = [
        "configs/shapes/vae.yaml",
        *TINY_VAE,
        f"train.output_dir={out}",
        "train.checkpoint_every=10",
        "train.sample_every=1000",
    ]
    assert train.main([*common, "train.max_steps=10"]) == 0
    resumed = [common[0], "--resume", "latest", *common[1:], "train.max_steps=20"]
    assert train.main(resumed) == 0
    steps = [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")]
    assert steps == [10, 20]  # the second run started at step 10, not 0


def test_training_afresh_into_a_run_is_refused_and_leaves_it_as_it_was(tmp_path, capsys):
    out = tmp_path / "vae"
    args = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={out}", "train.max_steps=10"]
    assert train.main([*args, "train.checkpoint_every=10", "train.sample_every=1000"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train.main(args) == 2  # no --resume: it would start over and overwrite the run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"train.output_dir={str(out)!r} already holds a run" in err
    assert "--resume latest" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resuming_a_run_with_another_model_is_refused_naming_the_key_and_keeps_the_run(
    tmp_path, capsys
):
    out = tmp_path / "vae"
    args = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={out}", "train.max_steps=4"]
    assert train.main([*args, "train.checkpoint_every=4", "train.sample_every=1000"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    other = [*args, "model.latent_dim=4", "train.max_steps=8", "--resume", "latest"]
    assert train.main(other) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with model.latent_dim=8, not 4" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # how long it runs may change: the same model resumes to more steps
    assert train.main([*args, "train.max_steps=8", "--resume", "latest"]) == 0


def test_overwrite_replaces_the_earlier_run_and_leaves_the_folders_other_files(tmp_path, capsys):
    out = tmp_path / "vae"
    args = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={out}", "train.max_steps=6"]
    assert train.main([*args, "train.checkpoint_every=3", "train.sample_every=1000"]) == 0
    (out / "notes.txt").write_text("mine")
    again = [*args, "train.max_steps=2", "train.checkpoint_every=2", "train.log_every=1"]
    assert train.main([*again, "--overwrite", "--resume", "latest"]) == 2
    assert "--overwrite starts afresh" in capsys.readouterr().err
    assert train.main([*again, "--overwrite"]) == 0
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-0000002"]  # the earlier run's step-3 and 6 are gone
    steps = [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")]
    assert steps == [1, 2] and (out / "notes.txt").read_text() == "mine"


def test_resuming_from_a_folder_that_holds_no_checkpoint_is_a_one_line_error(tmp_path, capsys):
    args = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={tmp_path / 'run'}"]
    assert train.main([*args, "--resume", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: configs/shapes/vae.yaml: train.resume=")
    assert "no complete checkpoint there" in err and err.count("\n") == 1


def test_a_mistyped_model_key_is_an_error_naming_it(capsys):
    assert train.main(["configs/shapes/vae.yaml", "model.latnt_dim=4"]) == 2
    err = capsys.readouterr().err
    assert "latnt_dim" in err and "latent_dim" in err and "configs/shapes/vae.yaml" in err
    assert err.count("configs/shapes/vae.yaml") == 1  # the file named once, not twice


def test_a_data_set_smaller_than_one_batch_is_a_one_line_error_before_any_step(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "three"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 0, 0)).save(folder / f"{i}.png")
    out = tmp_path / "tok"
    argv = ["configs/shapes/vqvae.yaml", f"data.path={folder}", f"train.output_dir={out}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.split("\r")[-1]  # after the image check's progress bar
    assert err.startswith("error: configs/shapes/vqvae.yaml: ") and len(err.splitlines()) == 1
    assert "2 training samples, fewer than one batch (train.batch_size=64)" in err
    assert not out.exists()  # refused before the run folder was made


def test_an_unknown_model_type_lists_the_families(capsys):
    assert train.main(["configs/shapes/vae.yaml", "model.type=vqgan"]) == 2
    err = capsys.readouterr().err
    assert "vqgan" in err and "cvae" in err and "categorical_vae" in err


def test_validation_loss_is_logged_at_each_sample_step_and_a_loss_curve_drawn(tmp_path, caplog):
    out = tmp_path / "vae"
    argv = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={out}"]
    argv += ["train.max_steps=20", "train.sample_every=10", "train.log_every=5"]
    with caplog.at_level("WARNING"):
        assert train.main(argv) == 0
    assert not [r for r in caplog.records if "warmup_steps" in r.getMessage()]
    val = read_metrics(out / "logs" / "metrics.csv", "val")
    assert [r["step"] for r in val] == [10, 20] and all(r["val/loss"] > 0 for r in val)
    assert [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")] == [5, 10, 15, 20]
    curve = out / "samples" / "loss_curve.png"
    from PIL import Image

    with Image.open(curve) as image:
        assert image.format == "PNG" and image.size == (500, 320)
        # two lines of two colours: the training and the validation loss
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 16)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours


def test_a_warmup_longer_than_the_run_is_warned_of(tmp_path, caplog):
    argv = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={tmp_path / 'v'}"]
    with caplog.at_level("WARNING"):
        assert train.main([*argv, "train.max_steps=4", "train.warmup_steps=40"]) == 0
    (message,) = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert "train.warmup_steps=40 > train.max_steps=4" in message and "ends at 10%" in message


# `python -m t2i.train ARGS` apart, then whether torch was imported when it refused them
REFUSED_EARLY = """import runpy, sys
sys.argv = ["python -m t2i.train", *sys.argv[1:]]
try:
    runpy.run_module("t2i.train", run_name="__main__")
except SystemExit as exit_:
    print(exit_.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "argv, says",
    [
        (["configs/shapes/nope.yaml"], "config file not found: configs/shapes/nope.yaml"),
        (["configs/shapes/vae.yaml", "train.max_stepz=3"], "Did you mean 'max_steps'?"),
        (["configs/shapes/vae.yaml", "train.max_steps=abc"], "'train.max_steps' must be int"),
        (["configs/shapes/vae.yaml", "--resum", "latest"], "unrecognized arguments: --resum"),
    ],
)
def test_a_bad_command_line_is_refused_before_torch_is_imported(argv, says):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", REFUSED_EARLY, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.stdout.split() == ["2", "False"]
    err = done.stderr.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_used_run_folder_is_refused_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "vae"
    args = ["configs/shapes/vae.yaml", *TINY_VAE, f"train.output_dir={out}", "train.max_steps=2"]
    assert train.main([*args, "train.checkpoint_every=2", "train.sample_every=1000"]) == 0
    for argv, says in [
        (args, "already holds a run (checkpoint-0000002)"),  # afresh into a used folder
        ([*args, "model.latent_dim=4", "--resume", "latest"], "with model.latent_dim=8, not 4"),
        ([*args, "--overwrite", "--resume", "latest"], "--overwrite starts afresh"),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", REFUSED_EARLY, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
        assert done.stdout.split() == ["2", "False"], argv
        err = done.stderr.strip()
        assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
