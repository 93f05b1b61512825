"""Record in a saved pipeline's CLIP which tokens its training captions held, for a CLIP
trained before t2i recorded them itself (training now does: `seen_tokens` in the CLIP's
config.json). With the record, a prompt of words the model never saw gets a warning that
names them. Only clip/config.json changes; the weights, and so the pipeline's hashes, stay.

    python scripts/record_vocabulary.py t2i/assets/default --shapes   # the shipped default
    python scripts/record_vocabulary.py my_pipeline --captions captions.txt   # one a line
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i.cli import OneLineParser  # noqa: E402


def shapes_captions(n: int = 20000) -> list[str]:
    """Captions of the shapes world, one- and two-object scenes (its whole vocabulary: the
    grammar has some 35 words, all of which 20,000 scenes use)."""
    from t2i.data.shapes import make_sample

    return [
        make_sample(i, seed=0, size=16, num_objects=k)["caption"] for i in range(n) for k in (1, 2)
    ]


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python scripts/record_vocabulary.py", description=__doc__)
    p.add_argument("pipeline", help="a saved pipeline directory (with clip/)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--shapes", action="store_true", help="it was trained on the shapes world")
    source.add_argument("--captions", metavar="FILE", help="its training captions, one a line")
    args = p.parse_args(argv)
    config_path = Path(args.pipeline) / "clip" / "config.json"
    if not config_path.is_file():
        p.error(f"{config_path}: no such file (PIPELINE must hold a clip/ component)")
    if args.captions is not None and not Path(args.captions).is_file():
        p.error(f"--captions {args.captions}: no such file")
    from t2i.models import CLIPModel

    captions = (
        shapes_captions()
        if args.shapes
        else [c for c in Path(args.captions).read_text().splitlines() if c.strip()]
    )
    clip = CLIPModel.from_config(json.loads(config_path.read_text()))
    seen = {int(t) for t in clip.tokenize(captions).unique()}
    config = json.loads(config_path.read_text())
    config["seen_tokens"] = sorted(seen | set(config.get("seen_tokens") or []))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"{config_path}: {len(config['seen_tokens'])} tokens of {len(captions)} captions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
