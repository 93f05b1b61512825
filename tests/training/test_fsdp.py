"""FSDP proven on two CPU processes (gloo): `accelerate launch` with the shipped FSDP config
trains the DALL-E prior and the latent denoiser with the loss curve and the weights of one
process with the same global batch; the learning-rate schedule and EMA step once per
optimizer update; the sharded checkpoint resumes after SIGKILL to the same curve; and the
saved `model/` loads in one process and draws. Slow (about 2 minutes): `make test-slow`.

One process trains the same 16 samples per update as two micro-batches of 8 (gradient
accumulation): each micro-batch's random draws -- the denoiser's noise and timesteps, the
dropped captions -- are seeded by its place in the loader's order, so the two layouts draw
the same numbers and must agree to float precision."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ldm_tiny
import pytest
import tiny
import torch
from diffusers import DPMSolverMultistepScheduler
from safetensors.torch import load_file

from t2i import train
from t2i.models import CLIPModel, load_model
from t2i.pipelines import DALLEPipeline, LatentDiffusionPipeline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU proof: 2 processes, no GPU"),
]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STEPS = ["train.max_steps=6", "train.checkpoint_every=2", "train.log_every=1"]
COMMON = [
    *tiny.DATA,
    "data.num_train=128",
    "train.warmup_steps=2",
    "train.num_samples=4",
    "train.sample_every=3",
    "train.ema_decay=0.9",
    "train.learning_rate=1e-3",
]
FSDP = [
    "-m",
    "accelerate.commands.launch",
    "--config_file",
    str(ROOT / "configs" / "accelerate" / "fsdp.yaml"),
    "--num_processes",
    "2",
    "--mixed_precision",
    "no",  # the config's bf16 is for GPUs
    "--main_process_port",
    "29541",
]


def arg(key: str, value) -> str:
    return f"{key}={list(value) if isinstance(value, tuple) else value}"


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    """A tiny tokenizer and CLIP (the prior's), and a tiny KL autoencoder and 16 px CLIP (the
    denoiser's), trained or built in this process."""
    root = tmp_path_factory.mktemp("parts")
    small = [*tiny.DATA, "data.num_train=128", "train.batch_size=16", "train.sample_every=100"]
    for name, config, extra in (
        ("vq", "vqvae", tiny.VQ_ARGS),
        ("clip", "clip", tiny.CLIP_ARGS),
        ("ae", "autoencoder_kl", [arg(f"model.{k}", v) for k, v in ldm_tiny.AUTOENCODER.items()]),
    ):
        size = ["data.image_size=16"] if name == "ae" else []
        argv = [f"configs/shapes/{config}.yaml", *small, *extra, *size, "train.max_steps=4"]
        assert train.main([*argv, f"train.output_dir={root / name}"]) == 0
    torch.manual_seed(0)
    CLIPModel(**{**tiny.CLIP, "image_size": 16}).save_pretrained(root / "clip16" / "model")
    return root


def route_args(route: str, parts: Path) -> list[str]:
    if route == "prior":
        return [
            "configs/shapes/prior.yaml",
            *COMMON,
            "model.num_tokens=32",
            "model.clip_width=32",
            "model.dim=32",
            "model.depth=2",
            "model.heads=2",
            f"data.tokenizer={parts / 'vq'}",
            f"data.clip={parts / 'clip'}",
            f"data.token_cache={parts / 'cache'}",
        ]
    unet = [arg(f"model.{k}", v) for k, v in ldm_tiny.DENOISER.items() if k != "context_length"]
    return [
        "configs/shapes/ldm.yaml",
        *COMMON,
        *unet,
        "data.image_size=16",
        f"data.autoencoder={parts / 'ae'}",
        f"data.clip={parts / 'clip16'}",
        f"data.token_cache={parts / 'cache16'}",
    ]


def command(route: str, parts: Path, out: Path, fsdp: bool, *extra: str) -> list[str]:
    layout = ["train.batch_size=8"]
    if not fsdp:  # the same 16 samples per update, as two micro-batches of 8
        layout.append("train.gradient_accumulation_steps=2")
    launcher = FSDP if fsdp else []
    return [
        sys.executable,
        *launcher,
        "-m",
        "t2i.train",
        *route_args(route, parts),
        *STEPS,
        *layout,
        f"train.output_dir={out}",
        *extra,
    ]


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def curve(out: Path) -> list[dict[str, float]]:
    """The training rows of logs/metrics.csv (loss and learning rate), by step."""
    with (out / "logs" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    return [{"step": int(r["step"]), "loss": float(r["loss"]), "lr": float(r["lr"])} for r in rows]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "diffusion_pytorch_model.safetensors")


def assert_same_run(got: Path, want: Path) -> None:
    a, b = curve(got), curve(want)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b, strict=True):
        assert x["lr"] == pytest.approx(y["lr"], rel=1e-9), x["step"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6), x["step"]
    wa, wb = weights(got), weights(want)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module", params=["prior", "ldm"])
def runs(request, parts, tmp_path_factory) -> tuple[str, Path, Path, Path]:
    """(route, one process, two FSDP processes, the parts) for each route."""
    route = request.param
    root = tmp_path_factory.mktemp(route)
    run(command(route, parts, root / "one", fsdp=False))
    run(command(route, parts, root / "two", fsdp=True))
    return route, root / "one", root / "two", parts


def test_two_fsdp_processes_train_as_one_process_with_the_same_global_batch(runs):
    route, one, two, _ = runs
    shards = sorted((two / "checkpoints" / "checkpoint-0000006").rglob("*.distcp"))
    assert len(shards) >= 2, "the checkpoint is not FSDP's sharded one"  # one per process
    assert not (one / "checkpoints" / "checkpoint-0000006" / "pytorch_model_fsdp_0").exists()
    losses = [r["loss"] for r in curve(two)]
    assert losses[-1] < losses[0], f"{route}: the loss did not fall"
    assert_same_run(two, one)


def test_ema_and_the_schedule_step_once_per_optimizer_update_on_every_process(runs):
    """diffusers issues 1895 (EMA stepped per micro-batch) and 4468 (the schedule stepped
    once per process): the EMA's count and the learning rate follow the updates alone."""
    _, one, two, _ = runs
    for out in (one, two):
        for step in (2, 4, 6):
            state = json.loads(
                (out / "checkpoints" / f"checkpoint-{step:07d}" / "trainer_state.json").read_text()
            )
            assert state["ema"]["optimization_step"] == step
    lrs = [r["lr"] for r in curve(two)]
    assert lrs[1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(5e-4)  # warmup: 2 updates
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at max_steps


def kill_after(cmd: list[str], checkpoint: Path) -> None:
    """Start `cmd` (its own process group) and SIGKILL all of it once `checkpoint` exists."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_the_sharded_checkpoint_resumes_after_sigkill_to_the_same_curve(runs, tmp_path):
    route, _, two, parts = runs
    out = tmp_path / "killed"
    kill_after(command(route, parts, out, fsdp=True), out / "checkpoints" / "checkpoint-0000004")
    assert not (out / "model").exists()  # it died before the end
    run(command(route, parts, out, True, "train.resume=latest"))
    assert_same_run(out, two)


def test_the_saved_model_loads_in_one_process_and_draws(runs):
    route, _, two, parts = runs
    model = load_model(two / "model")
    generator = torch.Generator().manual_seed(0)
    if route == "prior":
        pipe = DALLEPipeline(load_model(parts / "clip"), load_model(parts / "vq"), model)
        out = pipe("a red circle", num_images_per_prompt=2, generator=generator, output_type="pt")
        size = 32
    else:
        scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler.config)
        pipe = LatentDiffusionPipeline(
            load_model(parts / "ae"), model, load_model(parts / "clip16"), scheduler
        )
        out = pipe(
            "a red circle",
            num_images_per_prompt=2,
            num_inference_steps=3,
            generator=generator,
            output_type="pt",
        )
        size = 16
    images = out.images
    assert images.shape == (2, 3, size, size) and torch.isfinite(images).all()
    assert images.std() > 0.01  # a drawing, not a blank
