"""Compare unCLIP decoders on the shapes world: the judge's agreement of variations with
their source image, and decoding speed (docs/RESULTS.md, "Which decoder").

    python scripts/compare_decoders.py runs/default/decoder runs/default/diffusion_decoder \
        --clip runs/default/clip_relations --diffusion-prior runs/default/diffusion_prior

Each DECODER is a run or saved-model directory, or a checkpoint folder of a run (its
weights, with the model section of the run's config.yaml). All of them decode the CLIP image
embeddings of the same test images (`--n` of them per `--num-objects`, one-object and
two-object scenes by default, `--variations` each) from `--clip`, the CLIP they were
trained on. The image tokenizer comes from --runs (vqvae: the pipeline's own); the diffusion
prior only completes the unCLIP pipeline (variations do not use it).
Prints one JSON object per decoder, sampling setting (each --guidance-scale with each
--temperature; a pixel decoder has no temperature) and number of objects.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from t2i.config import checker, load_config
from t2i.data.shapes import ShapesDataset
from t2i.evaluation.models import TEST_SEED
from t2i.evaluation.pipelines import variation_agreement
from t2i.models import build_model, load_model
from t2i.pipelines import UnCLIPPipeline


def load_decoder(path: Path) -> torch.nn.Module:
    """A decoder from a run or model directory, or from a run's checkpoint folder."""
    if not (path / "model.safetensors").is_file():
        return load_model(path)
    run = path.parent.parent  # RUN/checkpoints/checkpoint-N
    model = build_model(load_config(run / "config.yaml").model, checker(str(run)))
    ema = path / "ema.safetensors"  # what a finished run saves, when it keeps an EMA
    weights = load_file(ema if ema.is_file() else path / "model.safetensors")
    # the trainer wraps the model in a module whose forward is its training_losses
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})
    return model


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("decoders", nargs="+", type=Path, metavar="DECODER")
    p.add_argument("--clip", type=Path, required=True, help="the CLIP the decoders read")
    p.add_argument("--diffusion-prior", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=Path("runs/default"), help="holds vqvae")
    p.add_argument("--n", type=int, default=100, help="test images per number of objects")
    p.add_argument("--num-objects", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--variations", type=int, default=4, help="decoded per image")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0])
    p.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    parts = dict(
        clip=load_model(args.clip).eval(),
        image_tokenizer=load_model(args.runs / "vqvae").eval(),
        diffusion_prior=load_model(args.diffusion_prior).eval(),
    )
    size = parts["image_tokenizer"].config.image_size
    sets = {k: ShapesDataset(args.n, TEST_SEED, size, num_objects=k) for k in args.num_objects}
    for path in args.decoders:
        pipe = UnCLIPPipeline(**parts, decoder=load_decoder(path).eval())
        pipe.set_progress_bar_config(disable=True)
        codes = "image_tokens" in pipe.decoder.reads  # a pixel decoder has no temperature
        temperatures = args.temperature if codes else [None]
        for scale, temperature, k in itertools.product(args.guidance_scale, temperatures, sets):
            generator = torch.Generator().manual_seed(args.seed)
            result = variation_agreement(
                pipe,
                sets[k],
                args.variations,
                guidance_scale=scale,
                temperature=temperature,
                generator=generator,
            )
            row = {"decoder": str(path), "guidance_scale": scale, "temperature": temperature}
            print(json.dumps({**row, "num_objects": k, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
