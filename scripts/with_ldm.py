"""A saved bundle with its latent diffusion route from other runs (to score them side by side).

    python scripts/with_ldm.py t2i/assets/default runs/shapes/autoencoder_kl runs/shapes/ldm out/b
    python -m t2i.evaluate out/b --settings ldm_plain ldm_guidance_3

The bundle's other components (tokenizer, CLIP, priors, decoder) and its recorded sampling
settings are kept; `vae` and `unet` come from the given runs (or saved models; a checkpoint
exported by scripts/export_checkpoint.py), with a DPM-Solver++ scheduler over the denoiser's
training schedule, all in float16 as the shipped default is. `--set ldm_guidance_scale=3`
records another default. Each component's config.yaml (how it trained) is copied beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler

from t2i.models import LatentAutoencoder, LatentDenoiser, load_model
from t2i.pipelines import TextToImagePipeline


def parse_sets(items: list[str]) -> dict:
    """--set NAME=VALUE items as recorded sampling defaults (JSON values)."""
    sampling = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        sampling[name] = json.loads(value)
    return sampling


def check_paths(base: Path, out: Path) -> None:
    """A ValueError when out exists (nothing is overwritten) or base is no saved bundle."""
    if out.exists():
        raise ValueError(f"{out} exists; choose another out")
    if not (base / "model_index.json").is_file():
        raise ValueError(f"{base}: no model_index.json; give a saved bundle")


def save_with(
    base: Path, out: Path, parts: dict, sampling: dict, configs: dict[str, Path]
) -> TextToImagePipeline:
    """The bundle at `base` (float16) with `parts` replacing or adding components, its
    recorded settings updated with `sampling`, saved to `out` with each component's
    config.yaml (how it trained: the base's, or `configs`) beside it."""
    bundle = TextToImagePipeline.from_pretrained(base, torch_dtype=torch.float16)
    kept = {n: c for n, c in bundle.components.items() if c is not None and n not in parts}
    pipe = TextToImagePipeline(**kept, **parts)
    pipe.sampling_defaults.update({**bundle.sampling_defaults, **sampling})
    pipe.save_pretrained(out)
    for name, path in {**{n: base / n / "config.yaml" for n in kept}, **configs}.items():
        if path.is_file():
            shutil.copy(path, out / name / "config.yaml")
    return pipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="a saved bundle (model_index.json)")
    parser.add_argument("vae", help="the autoencoder: a run or saved model")
    parser.add_argument("unet", help="the denoiser: a run or saved model")
    parser.add_argument("out", help="where the bundle goes (must not exist)")
    parser.add_argument("--unet-config", help="the denoiser's run config.yaml (for a checkpoint)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a recorded sampling default (JSON value), e.g. ldm_guidance_scale=3",
    )
    args = parser.parse_args(argv)
    base, out = Path(args.bundle), Path(args.out)
    try:
        check_paths(base, out)
        sampling = parse_sets(args.set)
        fp16 = torch.float16
        vae = load_model(args.vae, fp16, kind=LatentAutoencoder).eval()
        unet = load_model(args.unet, fp16, kind=LatentDenoiser).eval()
        grid = (vae.latent_channels, vae.latent_size)
        if (unet.config.latent_channels, unet.config.latent_size) != grid:
            raise ValueError(
                f"{args.unet} draws {unet.config.latent_channels} x "
                f"{unet.config.latent_size} latents; {args.vae}'s are {grid[0]} x {grid[1]}"
            )
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scheduler = DPMSolverMultistepScheduler.from_config(unet.scheduler.config)
    configs = {
        "vae": Path(args.vae) / "config.yaml",
        "unet": Path(args.unet_config or Path(args.unet) / "config.yaml"),
    }
    parts = dict(vae=vae, unet=unet, scheduler=scheduler)
    pipe = save_with(base, out, parts, sampling, configs)
    print(
        f"{out}: {type(vae).__name__} + {unet.config.backbone} denoiser; {pipe.sampling_defaults}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
