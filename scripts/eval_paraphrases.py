"""Does a pipeline draw a concept when asked in words its captions never used? The paraphrases
of scripts/datasets/emoji_paraphrases.json ("a happy face" for grinning face) through the
generator, judged by the evaluation CLIP:

    python scripts/eval_paraphrases.py PIPELINE --data data/emoji \
        --eval-clip runs/emoji/eval_clip32 [--images 2] [--seed 0] [--out FILE.json]

For each entry {concept, paraphrase} whose concept the data set has, the pipeline draws
--images images of the paraphrase and as many of the concept's bare name (a caption form it
trained on: the ceiling of reading), at its recorded sampling settings, never reranked;
image j of entry k from seed + k * images + j. The evaluation CLIP ranks each image's concept
name among 99 other entries' names (R-precision, `t2i.evaluation.captioned.r_precision`).
Figures are split by whether some training image of the pipeline's split shows the concept
(`seen`) or none does (`heldout`: on the emoji corpus, heldout.json's concepts):
`paraphrase_r1_seen`, `paraphrase_r1_heldout`, `name_r1_seen`, `name_r1_heldout`, and
`real_name_r1_seen` / `_heldout` (real base-form images of the concept, as many per entry:
what the judge reads of real images), null for a group without entries; `entries` counted
per group.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emoji_grid import draw  # noqa: E402
from eval_text_lever import (  # noqa: E402
    PARAPHRASES,
    base_images,
    read_paraphrases,
    trained_concepts,
)

from t2i.cli import check_model, pipeline_path  # noqa: E402
from t2i.data.captioned import CaptionedDataset  # noqa: E402
from t2i.evaluation.captioned import (  # noqa: E402
    R_PRECISION_CANDIDATES,
    embed_images,
    embed_texts,
    heldout_split,
    r_precision,
    read_samples,
)
from t2i.models import CLIPModel, load_model  # noqa: E402

BATCH = 50


def measure(pipe, judge, data, split, entries, images: int, seed: int) -> dict:
    """The report (see the module docstring)."""
    present = base_images(data, [e["concept"] for e in entries])
    entries = [e for e in entries if present[e["concept"]]]
    if len(entries) < 2:
        raise ValueError(f"{data.path}: fewer than two paraphrased concepts are in it")
    trained = trained_concepts(data, split)
    names = embed_texts(judge, [e["concept"] for e in entries], BATCH)  # (E, D)
    report: dict = {"images_per_prompt": images}
    true = torch.arange(len(entries)).repeat_interleave(images)
    reals = [
        present[e["concept"]][j % len(present[e["concept"]])]
        for e in entries
        for j in range(images)
    ]
    drawn = {
        "paraphrase": torch.stack(
            draw(pipe, [e["paraphrase"] for e in entries for _ in range(images)], seed, BATCH)
        ),
        "name": torch.stack(
            draw(pipe, [e["concept"] for e in entries for _ in range(images)], seed, BATCH)
        ),
        "real_name": read_samples(data, reals).pixels,  # real images of it: the judge's ceiling
    }
    groups = {
        group: [k for k, e in enumerate(entries) if (e["concept"] in trained) == in_group]
        for group, in_group in (("seen", True), ("heldout", False))
    }
    report["entries"] = {group: len(rows) for group, rows in groups.items()}
    for form, pixels in drawn.items():
        embeds = embed_images(judge, pixels, BATCH)
        for group, rows in groups.items():
            if not rows:
                report[f"{form}_r1_{group}"] = None
                continue
            keep = torch.tensor([k * images + j for k in rows for j in range(images)])
            report[f"{form}_r1_{group}"] = r_precision(
                embeds[keep], true[keep], names, R_PRECISION_CANDIDATES, seed
            )
    return report


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("pipeline", help="a saved pipeline or a shipped one's name")
    p.add_argument("--data", required=True, help="the captioned data set it was trained on")
    p.add_argument("--eval-clip", required=True, help="the evaluation CLIP (a model folder)")
    p.add_argument("--paraphrases", default=str(PARAPHRASES), help="the paraphrase file")
    p.add_argument("--images", type=int, default=2, help="images per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--route", help="the route (default: the pipeline's first)")
    p.add_argument("--out", help="also write the JSON here (never over a file)")
    args = p.parse_args(argv)
    try:
        if args.out and Path(args.out).exists():
            raise ValueError(f"--out {args.out}: exists; choose another file")
        if args.images < 1:
            raise ValueError(f"--images {args.images}: must be >= 1")
        check_model(args.pipeline, "PIPELINE")
        try:
            entries = read_paraphrases(args.paraphrases)
        except ValueError as err:
            raise ValueError(f"--paraphrases {args.paraphrases}: {err}") from None
        from t2i.pipelines import TextToImagePipeline

        path = pipeline_path(args.pipeline)
        bundle = TextToImagePipeline.from_pretrained(path, torch_dtype=torch.float32)
        route = args.route or bundle.routes[0]
        if route not in bundle.routes:
            raise ValueError(f"--route {route}: the pipeline has {', '.join(bundle.routes)}")
        judge = load_model(args.eval_clip, kind=CLIPModel).eval()
        data = CaptionedDataset(args.data, bundle.image_size)
        split = heldout_split(data, path)
        pipe = bundle.route(route)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            report = measure(pipe, judge, data, split, entries, args.images, args.seed)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"pipeline": args.pipeline, "route": route, **report}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
