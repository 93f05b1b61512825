"""Train every stage of the default pipeline on the shapes world and ship it in t2i/assets/.

    python scripts/build_default.py                       # CPU or GPU, configs as they are
    python scripts/build_default.py --set prior.train.max_steps=20000 --set prior.model.depth=8

It is the from-scratch recipe (`t2i.recipe`) applied to the shapes world:
configs/shapes/pipeline.yaml names the stages, each `python -m t2i.train` on its
configs/shapes/STAGE.yaml (seeded), and the sampling settings the pipeline records:
  vqvae            the image tokenizer
  clip             CLIP, contrastive on in-batch negatives
  prior            the DALL-E prior (reads vqvae and clip)
  clip_relations   that CLIP fine-tuned with relation hard negatives: the pipeline's CLIP
  prior_relations  that prior fine-tuned to read clip_relations: the pipeline's prior
  diffusion_prior  unCLIP's diffusion prior (reads clip_relations)
  decoder          unCLIP's decoder (reads vqvae and clip_relations)
  autoencoder_kl   the latent diffusion route's KL autoencoder
  ldm              its denoiser (reads autoencoder_kl and clip_relations)
What a stage reads is not written here: its model declares it (`model.reads`), and the stage
graph (`t2i.training.stages`) names the latest earlier stage that trained each reader.
`--routes dalle` builds the first five only: a pipeline without the unCLIP and latent
diffusion routes.
Each run goes to RUNS/STAGE; a stage trained on the same inputs (config, data, the weights
of the runs it reads) is kept, one whose inputs changed is retrained (the earlier run moved
to RUNS/STAGE.N), and a stage killed part-way resumes from its last checkpoint. The
pipeline is then assembled, cast to float16 and saved (safetensors) to --out, with each
run's config.yaml beside its weights; its size must stay within --max-mb.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from t2i import train
from t2i.config import ConfigError
from t2i.pipelines import DEFAULT_PIPELINE, ROUTES
from t2i.recipe import build_pipeline, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "shapes" / "pipeline.yaml"
_MODEL = yaml.safe_load(RECIPE.read_text())["model"]
STAGES = [s["stage"] for s in _MODEL["stages"]]  # each trains configs/shapes/STAGE.yaml
SAMPLING = dict(_MODEL["sampling"])  # the recorded defaults (measured: see the recipe)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", default="runs/default", help="folder of the stages' runs")
    p.add_argument("--out", default=str(DEFAULT_PIPELINE), help="where the pipeline goes")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.SECTION.KEY=VALUE",
        help="override a stage's config, e.g. prior.train.max_steps=20000",
    )
    p.add_argument(
        "--routes",
        nargs="+",
        choices=list(ROUTES),
        default=list(ROUTES),
        help="the routes the pipeline carries (dalle is always built: unclip reads its parts)",
    )
    p.add_argument("--max-mb", type=float, default=60.0, help="size budget of the pipeline")
    for name, value in SAMPLING.items():  # --guidance-scale, --prior-candidates, ...
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=type(value), default=value, help="recorded default")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    unknown = [s for s in args.set if s.split(".", 1)[0] not in STAGES]
    if unknown:
        p.error(f"--set {unknown[0]}: start with a stage ({', '.join(STAGES)})")
    overrides = [
        f"train.output_dir={args.out}",
        f"model.runs={args.runs}",
        f"model.routes=[{', '.join(args.routes)}]",
        f"model.max_mb={args.max_mb}",
        *(f"model.sampling.{name}={getattr(args, name)}" for name in SAMPLING),
        *args.set,
    ]
    try:
        build_pipeline(load_recipe(RECIPE, overrides), train.run)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
