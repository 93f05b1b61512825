"""Wrap a trained VQ-VAE as a latent diffusion autoencoder over its pre-quantisation latents.

    python scripts/vq_latents.py runs/shapes/vqvae runs/shapes/vq_latents
    python -m t2i.evaluate runs/shapes/vq_latents          # PSNR, fidelity on reconstructions
    python -m t2i.train configs/shapes/ldm.yaml data.autoencoder=runs/shapes/vq_latents \
        model.latent_channels=64 train.output_dir=runs/shapes/ldm_vq

The scaling factor is 1 / the std of the encoder's output on `--images` training images of
the VQ-VAE run's data set (its config.yaml), as the KL autoencoder's is of its latents.
The latent diffusion route's alternative to the KL autoencoder (`t2i.models.VQLatents`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from t2i.config import DataConfig
from t2i.data.sets import build_datasets
from t2i.models import VQVAE, VQLatents, load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vqvae", help="a trained VQ-VAE: its run directory")
    parser.add_argument("out", help="where the VQLatents model is saved (must not exist)")
    parser.add_argument("--images", type=int, default=2048, help="images the std is taken on")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; choose another out", file=sys.stderr)
        return 2
    config = Path(args.vqvae) / "config.yaml"
    if not config.is_file():
        print(f"error: {config}: no such file; give the VQ-VAE's run directory", file=sys.stderr)
        return 2
    try:
        vq = load_model(args.vqvae, kind=VQVAE).float().eval()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    section = yaml.safe_load(config.read_text())["data"]
    data = DataConfig(**{**section, "num_train": args.images})
    train_set, _ = build_datasets(data)
    images = torch.stack([train_set[i]["pixel_values"] for i in range(len(train_set))])
    model = VQLatents.from_vqvae(vq, images.split(256))
    model.save_pretrained(out)
    print(
        f"{out}: scaling_factor {model.scaling_factor:.4f}, latents "
        f"{model.latent_channels} x {model.latent_size} x {model.latent_size}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
