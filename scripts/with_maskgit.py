"""A saved bundle with its masked route's prior from a run (to score it beside the others).

    python scripts/with_maskgit.py t2i/assets/default runs/shapes/maskgit out/b
    python -m t2i.evaluate out/b --settings maskgit_steps_4 maskgit_steps_12

The bundle's other components and its recorded sampling settings are kept, bit for bit; the
`masked_prior` comes from the given run (or saved model, or a checkpoint exported by
scripts/export_checkpoint.py) in float16, as the shipped default is. It must read the
bundle's tokenizer codes and CLIP widths. `--set maskgit_num_inference_steps=8` records
another default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from t2i.models import MaskGITPrior, load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside this one
from with_ldm import check_paths, parse_sets, save_with  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="a saved bundle (model_index.json)")
    parser.add_argument("masked_prior", help="the masked prior: a run or saved model")
    parser.add_argument("out", help="where the bundle goes (must not exist)")
    parser.add_argument("--config", help="the prior's run config.yaml (for a checkpoint)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a recorded sampling default (JSON value), e.g. maskgit_num_inference_steps=8",
    )
    args = parser.parse_args(argv)
    base, out = Path(args.bundle), Path(args.out)
    try:
        check_paths(base, out)
        sampling = parse_sets(args.set)
        prior = load_model(args.masked_prior, torch.float16, kind=MaskGITPrior).eval()
        tokenizer = json.loads((base / "image_tokenizer" / "config.json").read_text())
        codebook = tokenizer.get("codebook_size", tokenizer.get("num_tokens"))
        if codebook is not None and codebook != prior.config.num_tokens:
            raise ValueError(
                f"{args.masked_prior} draws {prior.config.num_tokens} codes; the bundle's "
                f"tokenizer has {codebook}"
            )
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = Path(args.config or Path(args.masked_prior) / "config.yaml")
    pipe = save_with(base, out, {"masked_prior": prior}, sampling, {"masked_prior": config})
    print(
        f"{out}: + masked prior ({prior.config.dim} x {prior.config.depth}); routes {pipe.routes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
