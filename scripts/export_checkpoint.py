"""Save the model of one checkpoint of a run as a loadable model directory.

    python scripts/export_checkpoint.py runs/shapes/ldm/checkpoints/checkpoint-0001500 out/ldm-1500

A run saves its final model in `model/`; this gives the model at an earlier checkpoint, for
comparing runs at equal steps. It is built from the run's config.yaml (two folders up) and
takes the checkpoint's EMA weights where the run kept them (`--raw`: the trained weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from t2i.config import checker, load_config
from t2i.models import build_model
from t2i.training.checkpoints import EMA_FILE, STATE_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run's checkpoints/checkpoint-N folder")
    parser.add_argument("out", help="the model directory to write (must not exist)")
    parser.add_argument("--raw", action="store_true", help="the trained weights, not the EMA")
    args = parser.parse_args(argv)
    ckpt, out = Path(args.checkpoint), Path(args.out)
    config_path = ckpt.parent.parent / "config.yaml"
    for path, what in ((ckpt / STATE_FILE, "a complete checkpoint"), (config_path, "its run")):
        if not path.is_file():
            print(f"error: {path}: no such file; {ckpt} is not {what}", file=sys.stderr)
            return 2
    if out.exists():
        print(f"error: {out} exists; choose another out", file=sys.stderr)
        return 2
    config = load_config(config_path)
    model = build_model(config.model, checker(str(config_path)))
    if not args.raw and (ckpt / EMA_FILE).is_file():
        missing, _ = model.load_state_dict(load_file(str(ckpt / EMA_FILE)), strict=False)
        lacking = sorted({name for name, _ in model.named_parameters()} & set(missing))
        if lacking:
            print(f"error: {ckpt / EMA_FILE} lacks {lacking[0]}", file=sys.stderr)
            return 2
    else:
        state = load_file(str(ckpt / "model.safetensors"))
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    model.save_pretrained(out)
    print(f"{out}: {type(model).__name__} at {ckpt.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
