"""Accelerate as the distributed engine: `accelerate launch` with the shipped DDP config starts
two CPU processes (gloo: the Accelerator joins their process group) that train as one process
with the same global batch; the shipped launch configs are ones accelerate accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
import torch
from accelerate.commands.config.config_args import load_config_from_file
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
ARGS = [
    "configs/shapes/clip.yaml",
    *tiny.CLIP_ARGS,
    "data.num_train=64",
    "data.num_val=4",
    "train.max_steps=6",
    "train.warmup_steps=1",
    "train.log_every=2",
    "train.checkpoint_every=100",
    "train.learning_rate=1e-3",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=[p.stem for p in LAUNCH_CONFIGS])
def test_launch_configs_are_valid_accelerate_configs(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.distributed_type is not None


def train(out: Path, launcher: list[str], batch_size: int, *extra: str) -> dict:
    cmd = [
        *launcher,
        "-m",
        "t2i.train",
        *ARGS,
        f"train.batch_size={batch_size}",
        f"train.output_dir={out}",
        *extra,
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(out / "model" / "diffusion_pytorch_model.safetensors")


def key_bias_free(weights: dict) -> dict:
    """The weights less the key part of each attention's in_proj_bias. A key bias adds the
    same q . b_k to every logit of a query, which softmax ignores: its true gradient is 0 and
    what backward gives is float noise. Noise summed in another order (one process, or two
    all-reduced) differs, and AdamW turns any noise into a full step, so these entries end
    apart by about lr per step while every other weight agrees to float precision."""
    out = {}
    for name, w in weights.items():
        if name.endswith("in_proj_bias"):  # [q | k | v]
            third = w.numel() // 3
            w = torch.cat([w[:third], w[2 * third :]])
        out[name] = w
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU proof: 2 processes, no GPU")
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    one = train(tmp_path / "one", [sys.executable], batch_size=16)
    launch = [  # the shipped DDP config with 2 processes; on a machine without CUDA they run
        sys.executable,  # on the CPU over gloo (fp32: the config's bf16 is for GPUs)
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / "multi_gpu.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "29517",
    ]
    two = train(tmp_path / "two", launch, batch_size=8)  # 2 processes x 8
    start = train(tmp_path / "start", [sys.executable], 16, "train.max_steps=0")
    assert one.keys() == two.keys()
    one, two, start = key_bias_free(one), key_bias_free(two), key_bias_free(start)
    for name in one:
        assert (one[name] - start[name]).abs().max() > 1e-4, f"{name} did not train"
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
