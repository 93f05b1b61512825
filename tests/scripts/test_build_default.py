"""scripts/build_default.py: trains the stages, resumes/keeps them, ships a float16 pipeline."""

from __future__ import annotations

import json

import pytest
import tiny
import torch
from conftest import load_script
from safetensors.torch import load_file

from t2i.pipelines import load_pipeline

build_default = load_script("build_default")

RUN = [
    *tiny.DATA,
    "data.num_train=64",
    "train.batch_size=16",
    "train.max_steps=3",
    "train.sample_every=100",
]
PRIOR = [
    "model.num_tokens=32",
    "model.clip_width=32",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
]
UNCLIP = ["model.embed_dim=16", "model.dim=32", "model.depth=1", "model.heads=2"]
SETS = [
    *(f"{stage}.{s}" for stage in build_default.STAGES for s in RUN),
    *(f"vqvae.{s}" for s in tiny.VQ_ARGS),
    *(f"clip.{s}" for s in tiny.CLIP_ARGS),
    *(f"prior.{s}" for s in PRIOR),  # the fine-tuned stages take their shapes from these
    *(f"maskgit.{s}" for s in PRIOR),
    *(f"diffusion_prior.{s}" for s in [*UNCLIP, "model.clip_width=32"]),
    *(f"decoder.{s}" for s in [*UNCLIP, "model.num_tokens=32"]),
    *(
        f"autoencoder_kl.{s}"
        for s in ["model.block_out_channels=[8,16,16]", "model.norm_num_groups=4"]
    ),
    *(
        f"ldm.model.{s}"
        for s in [
            "block_out_channels=[16,32]",
            "attention_head_dim=8",
            "norm_num_groups=8",
            "clip_width=32",
        ]
    ),
]


def test_builds_a_float16_pipeline_that_loads_and_generates(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "default"
    argv = ["--runs", str(runs), "--out", str(out), *(x for s in SETS for x in ("--set", s))]
    assert build_default.main(argv) == 0
    weights = load_file(out / "prior" / "diffusion_pytorch_model.safetensors")
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    assert (out / "prior" / "config.yaml").is_file()  # the run's config (its holdout) travels
    index = json.loads((out / "model_index.json").read_text())
    assert index["_t2i_sampling"] == build_default.SAMPLING  # the measured settings
    pipe = load_pipeline(out, device="cpu")
    assert pipe.prior.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a red circle", num_images_per_prompt=2, output_type="pt").images
    assert images.shape == (2, 3, 32, 32)
    unclip = load_pipeline(out, device="cpu", route="unclip")  # every route by default
    kw = dict(num_inference_steps=2, output_type="pt", num_images_per_prompt=1)
    assert unclip("a red circle", **kw).images.shape == (1, 3, 32, 32)
    ldm = load_pipeline(out, device="cpu", route="ldm")
    ldm.set_progress_bar_config(disable=True)
    assert type(ldm.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert ldm.vae.config.scaling_factor > 0  # fixed when the autoencoder was saved
    assert ldm("a red circle", **kw).images.shape == (1, 3, 32, 32)
    # --routes dalle: the same runs, a pipeline without the unCLIP stages
    dalle = tmp_path / "dalle"
    only = [*argv, "--out", str(dalle), "--routes", "dalle", "--temperature", "0.9"]
    assert build_default.main(only) == 0
    with pytest.raises(ValueError, match="has the DALL-E route only"):
        load_pipeline(dalle, device="cpu", route="unclip")
    recorded = json.loads((dalle / "model_index.json").read_text())["_t2i_sampling"]
    assert recorded == {**build_default.SAMPLING, "temperature": 0.9}  # a flag overrides one
    assert not (dalle / "decoder").exists()
    # the shipped CLIP and prior are the fine-tuned ones, and the unCLIP stages read that CLIP
    tuned = load_file(runs / "clip_relations" / "model" / "diffusion_pytorch_model.safetensors")
    shipped = load_file(out / "clip" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(shipped[k], tuned[k].half()) for k in shipped)
    assert "hard_negatives: relations" in (out / "clip" / "config.yaml").read_text()
    assert "hard_negative_loss" in (runs / "clip_relations" / "logs" / "metrics.csv").read_text()
    assert (out / "prior" / "config.yaml").read_text() == (
        runs / "prior_relations" / "config.yaml"
    ).read_text()
    # a second build keeps the trained stages: same weights
    mtime = (runs / "prior" / "model").stat().st_mtime
    vq_mtime = (runs / "vqvae" / "model").stat().st_mtime
    assert build_default.main([*argv, "--max-mb", "30"]) == 0
    assert (runs / "prior" / "model").stat().st_mtime == mtime
    with pytest.raises(SystemExit, match="over the 0.01 MB budget"):
        build_default.main([*argv, "--max-mb", "0.01"])
    assert (out / "model_index.json").is_file()  # the shipped one is left as it was
    # a stage whose inputs changed is retrained, and so is every stage reading it; the
    # earlier run is kept aside
    clip_weights = weights_of(runs / "clip_relations")
    assert build_default.main([*argv, "--set", "clip.train.learning_rate=1e-4"]) == 0
    assert (runs / "clip.1" / "model").is_dir()  # the earlier CLIP, kept
    assert (runs / "vqvae" / "model").stat().st_mtime == vq_mtime  # reads nothing changed
    assert weights_of(runs / "clip_relations") != clip_weights  # fine-tuned from the new CLIP
    assert (runs / "decoder.1").is_dir() and (runs / "ldm.1").is_dir()  # they read it
    assert not (runs / "autoencoder_kl.1").exists()
    index = json.loads((out / "model_index.json").read_text())
    assert (
        index["_t2i_provenance"]["decoder"]["reads"]["clip"]
        == index["_t2i_provenance"]["clip"]["id"]
    )


def weights_of(run):
    return (run / "model" / "diffusion_pytorch_model.safetensors").read_bytes()
