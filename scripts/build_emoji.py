"""Train the shipped emoji pipeline and put it in t2i/assets/emoji.

    make data-emoji-ship                 # the corpus less one style, and that style alone
    python scripts/build_emoji.py        # about 3 CPU-hours: CLIP, autoencoder, denoiser
    python scripts/build_emoji.py --set ldm.train.max_steps=100000  # longer, say on a GPU

It is the from-scratch recipe (configs/custom/pipeline.yaml, `t2i.recipe`) at its CPU preset
but for a longer denoiser schedule (`SHIP`), the latent diffusion route alone
(`model.routes=[ldm]`: CLIP, the KL autoencoder and the denoiser), on the emoji corpus less
the style kept back for the fine-tuning measurement (`data/emoji-ship`: every default style
but streamline-emojis; `data/emoji-streamline` holds that style alone). The sampling settings
it records are the ones measured on the emoji corpus (`SAMPLING`, docs/RESULTS.md). The
stages' runs go to --runs (a killed build resumes there; a stage trained on the same inputs
is kept); the pipeline, in float16 safetensors, to --out, with the corpus's LICENSE.md and
licence files beside it. Its size must stay within --max-mb.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from t2i import train
from t2i.config import ConfigError
from t2i.recipe import build_pipeline, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "custom" / "pipeline.yaml"
IMAGE_SIZE = 32  # the better of 32 and 64 px on this machine (docs/RESULTS.md)
# what the pipeline records: measured on the emoji corpus by `t2i.evaluate --sampling`
SAMPLING = {"ldm_guidance_scale": 2.0, "ldm_num_inference_steps": 10, "ldm_sampler": "dpm"}
# what the shipped build trains beyond the CPU preset: the denoiser 20,000 steps, not 9,000
# (the preset levels off near 9,000 steps at its decayed learning rate; a longer schedule keeps
# it higher for longer: docs/RESULTS.md, "Compute per hour")
SHIP = ["ldm.train.max_steps=20000", "ldm.train.checkpoint_every=1000"]
KEPT_BACK = "streamline-emojis"  # the style left out of the build (fine-tuning is measured on it)


def check_data(path: Path) -> list[str]:
    """The styles of the data set at `path` (its metadata.jsonl's `style`), refused with a
    ConfigError when it is not an emoji corpus with its licences, or holds the style kept
    back."""
    meta, licence = path / "metadata.jsonl", path / "LICENSE.md"
    if not meta.is_file() or not licence.is_file():
        raise ConfigError(
            f"--data {path}: no metadata.jsonl and LICENSE.md there; make data-emoji-ship "
            "builds the corpus"
        )
    styles = set()
    with meta.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                styles.add(json.loads(line)["style"])
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{meta}: line {number} has no style ({err})") from None
    if KEPT_BACK in styles:
        raise ConfigError(
            f"--data {path}: holds the {KEPT_BACK} style, kept back for the fine-tuning "
            "measurement; make data-emoji-ship builds the corpus without it"
        )
    return sorted(map(str, styles))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default="data/emoji-ship", help="the corpus (its metadata.jsonl)")
    p.add_argument("--runs", default="runs/emoji/ship", help="folder of the stages' runs")
    p.add_argument("--out", default=str(ROOT / "t2i" / "assets" / "emoji"), help="the pipeline")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.SECTION.KEY=VALUE",
        help="override a stage's config, e.g. ldm.train.max_steps=20000",
    )
    p.add_argument("--max-mb", type=float, default=80.0, help="size budget of the pipeline")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data, out = Path(args.data), Path(args.out)
    overrides = [
        f"data.path={data}",
        f"image_size={IMAGE_SIZE}",
        f"train.output_dir={out}",
        f"model.runs={args.runs}",
        "model.routes=[ldm]",
        f"model.max_mb={args.max_mb}",
        *(f"model.sampling.{k}={v}" for k, v in SAMPLING.items()),
        *SHIP,
        *args.set,
    ]
    try:
        styles = check_data(data)
        logging.getLogger("build_emoji").info("%s: styles %s", data, ", ".join(styles))
        build_pipeline(load_recipe(RECIPE, overrides), train.run)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shutil.copy(data / "LICENSE.md", out / "LICENSE.md")  # the images' licences, attribution
    if (data / "licenses").is_dir():
        shutil.copytree(data / "licenses", out / "licenses", dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
