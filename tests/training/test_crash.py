"""A training run killed with SIGKILL (between steps, or while it writes a checkpoint) resumes
with `--resume latest` to where an uninterrupted run would be."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2i.training import list_checkpoints

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


# `python -m t2i.train` whose write of checkpoint 20's state file stalls half-way (a slow
# disk): the test kills the process there, from outside, with SIGKILL
STALLS_IN_CHECKPOINT_20 = """
import sys, time
from pathlib import Path
from t2i import train
from t2i.training import checkpoints
write = checkpoints._write_json_atomic
def stalls(path, data):
    if data.get("step") == 20:  # (the manifest is written this way too)
        path.with_suffix(".tmp").write_text('{"step": 2')
        Path(sys.argv[1]).touch()
        time.sleep(300)
    write(path, data)
checkpoints._write_json_atomic = stalls
sys.exit(train.main(sys.argv[2:]))
"""


def start(
    out: Path, *extra: str, launcher: tuple[str, ...] = ("-m", "t2i.train")
) -> subprocess.Popen:
    cmd = [sys.executable, *launcher, *ARGS, f"train.output_dir={out}", *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the run trained without a break."""
    out = tmp_path_factory.mktemp("straight")
    run = start(out)
    assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:]
    return weights(out)


def kill(run: subprocess.Popen) -> None:
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def resume_and_compare(out: Path, straight: dict[str, torch.Tensor]) -> str:
    """Resume the run in `out` to its end, check it ends with `straight`'s weights, and
    return the checkpoint it resumed from."""
    resumed = start(out, "--resume", "latest")
    _, log = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-2000:]
    assert "resumed from" in log
    b = weights(out)
    assert straight.keys() == b.keys()
    for name in straight:
        torch.testing.assert_close(b[name], straight[name], rtol=0, atol=1e-6, msg=name)
    return log.split("resumed from", 1)[1].split()[0]


def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(tmp_path, straight):
    killed = start(tmp_path / "killed")
    first = tmp_path / "killed" / "checkpoints" / "checkpoint-0000010"
    deadline = time.monotonic() + 120
    while not first.is_dir() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))  # somewhere after step 10
    kill(killed)
    assert not (tmp_path / "killed" / "model").exists()
    resume_and_compare(tmp_path / "killed", straight)


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_to_resume(tmp_path, straight):
    out, stalled = tmp_path / "killed", tmp_path / "stalled"
    run = start(out, launcher=("-c", STALLS_IN_CHECKPOINT_20, str(stalled)))
    deadline = time.monotonic() + 120
    while not stalled.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stalled.exists(), run.stderr.read()[-2000:]
    kill(run)  # model, optimizer and RNG states of step 20 written; its state file half
    half = out / "checkpoints" / ".tmp-checkpoint-0000020"
    assert (half / "trainer_state.tmp").read_text() == '{"step": 2'
    assert list_checkpoints(out)[-1].name == "checkpoint-0000015"  # the half one is not listed
    assert Path(resume_and_compare(out, straight)).name == "checkpoint-0000015"
    assert not half.exists()  # the resumed run wrote checkpoint 20 over it
