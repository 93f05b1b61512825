"""A training run killed with SIGKILL resumes to where an uninterrupted run would be."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "configs/shapes/vae.yaml",
    "model.channels=[8, 16]",
    "model.latent_dim=4",
    "data.num_train=256",
    "data.num_val=4",
    "train.batch_size=16",
    "train.max_steps=40",
    "train.checkpoint_every=5",
    "train.sample_every=1000",
    "train.log_every=5",
    "train.warmup_steps=2",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "t2i.train", *ARGS, f"train.output_dir={out}", *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "diffusion_pytorch_model.safetensors")


def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(tmp_path):
    straight = start(tmp_path / "straight")
    killed = start(tmp_path / "killed")
    first = tmp_path / "killed" / "checkpoints" / "checkpoint-0000010"
    deadline = time.monotonic() + 120
    while not first.is_dir() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))  # somewhere after step 10
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "model").exists()
    resumed = start(tmp_path / "killed", "--resume", "latest")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    assert "resumed from" in resumed.stderr.read()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
