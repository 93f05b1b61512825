"""scripts/export_checkpoint.py: a run's checkpoint as a loadable model (its EMA weights), and
scripts/vq_latents.py: a trained VQ-VAE wrapped as a latent autoencoder."""

from __future__ import annotations

import tiny
import torch
from conftest import load_script
from safetensors.torch import load_file

from t2i import train
from t2i.data.shapes import ShapesDataset
from t2i.models import VQLatents, load_model

export = load_script("export_checkpoint")
vq_latents = load_script("vq_latents")


def test_a_checkpoint_exports_its_ema_weights_or_its_trained_ones(tmp_path, capsys):
    run = tmp_path / "vq"
    args = ["configs/shapes/vqvae.yaml", *tiny.VQ_ARGS, *tiny.DATA, f"train.output_dir={run}"]
    extra = [
        "train.max_steps=6",
        "train.checkpoint_every=3",
        "train.ema_decay=0.5",
        "train.sample_every=1000",
        "train.batch_size=8",
        "data.image_size=16",
    ]
    assert train.main([*args, *extra]) == 0
    ckpt = run / "checkpoints" / "checkpoint-0000003"
    assert export.main([str(ckpt), str(tmp_path / "ema")]) == 0
    assert export.main([str(ckpt), str(tmp_path / "raw"), "--raw"]) == 0
    ema, raw = load_model(tmp_path / "ema"), load_model(tmp_path / "raw")
    saved_ema = load_file(str(ckpt / "ema.safetensors"))
    for name, p in ema.named_parameters():
        assert torch.equal(p, saved_ema[name])
    final = load_model(run)  # step 6: the exports are of step 3
    assert not torch.equal(next(raw.parameters()), next(final.parameters()))
    assert not torch.equal(next(raw.parameters()), next(ema.parameters()))
    capsys.readouterr()
    assert export.main([str(ckpt), str(tmp_path / "ema")]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err

    assert vq_latents.main([str(run), str(tmp_path / "latents"), "--images", "64"]) == 0
    wrapped = load_model(tmp_path / "latents")
    assert isinstance(wrapped, VQLatents) and wrapped.latent_channels == tiny.VQ["embed_dim"]
    shapes = ShapesDataset(n=256, seed=7, size=16)  # the run's world, not its images
    x = torch.stack([shapes[i]["pixel_values"] for i in range(256)])
    assert 0.8 < wrapped.encode(x).std().item() < 1.25  # unit variance for the denoiser
