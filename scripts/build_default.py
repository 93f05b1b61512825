"""Train every stage of the default pipeline on the shapes world and ship it in t2i/assets/.

    python scripts/build_default.py                       # CPU or GPU, configs as they are
    python scripts/build_default.py --set prior.train.max_steps=20000 --set prior.model.depth=8

Stages, each `python -m t2i.train` on the config of configs/shapes/ named after it (seeded):
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
diffusion routes; the latent diffusion route's scheduler is DPM-Solver++ over the
denoiser's training schedule.
Each run goes to RUNS/STAGE; a stage whose run already holds a model is kept (unless it
read other runs than it now would: then the build stops and says so), and a stage killed
part-way resumes from its last checkpoint. The pipeline is then assembled, cast to
float16 and saved (safetensors) to --out, with each run's config.yaml beside its weights;
its size must stay within --max-mb.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler

from t2i import train
from t2i.config import load_config
from t2i.models import build_model, load_model
from t2i.pipelines import DEFAULT_PIPELINE, ROUTES, TextToImagePipeline
from t2i.training.inputs import needs
from t2i.training.stages import final_stages, readers

ROOT = Path(__file__).resolve().parents[1]
BUILD = [  # (stage, the pipeline component it trains), in training order
    ("vqvae", "image_tokenizer"),
    ("clip", "clip"),
    ("prior", "prior"),
    ("clip_relations", "clip"),
    ("prior_relations", "prior"),
    ("diffusion_prior", "diffusion_prior"),
    ("decoder", "decoder"),
    ("autoencoder_kl", "vae"),
    ("ldm", "unet"),
]
STAGES = [stage for stage, _ in BUILD]  # each trains configs/shapes/STAGE.yaml
ROUTES_STAGES = {  # a route's stages: those training a component its pipeline takes
    route: [s for s, c in BUILD if c in cls.component_names()] for route, cls in ROUTES.items()
}
INIT = {"clip_relations": "clip", "prior_relations": "prior"}  # fine-tuned from that run
# the sampling settings the pipeline records (a call's defaults), each measured on the shapes
# world (docs/RESULTS.md); a flag each (--guidance-scale ...) overrides it
SAMPLING = {
    # the DALL-E prior: guidance 3 at temperature 1 adds stray objects to this small prior;
    # 2 at 0.7 keeps the guidance gain without them
    "guidance_scale": 2.0,
    "temperature": 0.7,
    # unCLIP ("The unCLIP route"): the decoder's own settings (at 2 it adds stray objects);
    # the diffusion prior guided at 1.5, the best of 2 draws in 5 DDIM steps (x0-predicting,
    # it lands as close in 5 as in 25), which drew more two-object scenes right than 1 draw
    # in 10 at the same speed
    "decoder_guidance_scale": 1.5,
    "decoder_temperature": 0.7,
    "prior_guidance_scale": 1.5,
    "prior_candidates": 2,
    "num_inference_steps": 5,
    # latent diffusion ("The latent diffusion route"): guidance 2 beat 1 and 3 (and 5, on
    # the 4,000-step denoiser); 10 DPM-Solver++ steps draw as faithfully as 20 or 50 (within
    # 0.015) at twice the speed of 20
    "ldm_guidance_scale": 2.0,
    "ldm_num_inference_steps": 10,
    "ldm_sampler": "dpm",
}
logger = logging.getLogger("build_default")


def config_path(stage: str) -> Path:
    """The config a stage trains."""
    return ROOT / "configs" / "shapes" / f"{stage}.yaml"


def reads(stage: str) -> dict[str, str]:
    """The runs a stage's model reads: data key (tokenizer, clip) -> stage."""
    model = build_model(load_config(config_path(stage)).model)
    return readers(BUILD, STAGES.index(stage), needs(model.reads))


def stage_overrides(stage: str, runs: Path, extra: list[str]) -> list[str]:
    """The key=value overrides of one stage: its run folder, its inputs, and --set ones."""
    args = [f"train.output_dir={runs / stage}", "train.resume=latest"]
    args += [f"{key}={path}" for key, path in inputs(stage, runs).items()]
    if reads(stage):
        args.append(f"data.token_cache={runs / 'token_cache'}")
    prefix = f"{stage}."
    return args + [s.removeprefix(prefix) for s in extra if s.startswith(prefix)]


def inputs(stage: str, runs: Path) -> dict[str, str]:
    """The runs a stage reads: config key -> run folder."""
    keys = {f"data.{key}": runs / run for key, run in reads(stage).items()}
    if stage in INIT:
        keys["init_from"] = runs / INIT[stage]
    return {key: str(path) for key, path in keys.items()}


def train_stage(stage: str, runs: Path, extra: list[str]) -> None:
    """Train one stage unless its run already holds a finished model (trained on the runs
    it reads now)."""
    if (runs / stage / "model" / "config.json").is_file():
        recorded = dataclasses.asdict(load_config(runs / stage / "config.yaml"))
        for key, path in inputs(stage, runs).items():
            was = recorded
            for part in key.split("."):  # "data.clip" -> recorded["data"]["clip"]
                was = was[part]
            if was is None or Path(was).name != Path(path).name:  # the folder may move
                raise SystemExit(
                    f"stage {stage}: {runs / stage} was trained with {key}={was}, but the "
                    f"build reads {path}; delete {runs / stage} to retrain it"
                )
        logger.info("%s: kept %s (delete it to retrain)", stage, runs / stage / "model")
        return
    if train.main([str(config_path(stage)), *stage_overrides(stage, runs, extra)]) != 0:
        raise SystemExit(f"stage {stage} failed")


def assemble(
    runs: Path,
    out: Path,
    max_mb: float,
    sampling: dict | None = None,
    stages: list[str] | None = None,
) -> Path:
    """Load the trained stages (all, or `stages`), cast to float16 and save the pipeline to
    `out` (atomically), recording the sampling settings a call uses when it names none."""
    stages = stages or list(STAGES)
    components = final_stages([(s, c) for s, c in BUILD if s in stages])
    parts = {
        name: load_model(runs / stage, torch_dtype=torch.float16).eval()
        for name, stage in components.items()
    }
    if "unet" in parts:  # the latent diffusion route samples with DPM-Solver++
        parts["scheduler"] = DPMSolverMultistepScheduler.from_config(parts["unet"].scheduler.config)
    pipe = TextToImagePipeline(**parts)
    pipe.sampling_defaults.update(sampling or {})
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    for name, stage in components.items():  # how each part was trained (and its holdout)
        shutil.copy(runs / stage / "config.yaml", tmp / name / "config.yaml")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2**20
    if size > max_mb:
        raise SystemExit(f"the pipeline is {size:.1f} MB, over the {max_mb} MB budget")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    logger.info("default pipeline: %s (%.1f MB)", out, size)
    return out


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
        choices=ROUTES_STAGES,
        default=list(ROUTES_STAGES),
        help="the routes the pipeline carries (dalle is always built: unclip reads its parts)",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        help="train only these stages (default: the routes'; the others must be trained)",
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
    runs = Path(args.runs)
    routes = {"dalle", *args.routes}
    built = [s for s in STAGES if any(s in ROUTES_STAGES[r] for r in routes)]
    for stage in args.stages or built:
        train_stage(stage, runs, args.set)
    sampling = {name: getattr(args, name) for name in SAMPLING}
    assemble(runs, Path(args.out), args.max_mb, sampling, built)
    return 0


if __name__ == "__main__":
    sys.exit(main())
