"""How much does a CLIP's text tower carry past its training captions? Two figures that set
a CLIP with a locked pretrained text tower (LiT, Zhai et al. 2022) against one trained from
scratch on the same captioned corpus (the emoji corpus: data/emoji):

    python scripts/eval_text_lever.py CLIP_DIR --data data/emoji [--size 32] [--n 256] \
        [--seed 0] [--out FILE.json] [--paraphrases FILE.json]

- `r_precision` by part: `train` (images not held out) and each part of the data set's
  heldout.json (`cells`, `concepts`, `skin_tones` for the emoji corpus). Up to N images of
  the part (drawn at random, seeded); each image's canonical caption (its first) is ranked
  among itself and 99 other distinct canonical captions of the whole corpus by the CLIP;
  R@1 is the share ranked strictly first (`t2i.evaluation.captioned.r_precision`, AttnGAN's
  R-precision). `concepts` asks: does it name concepts it never saw an image of?
- `paraphrase_r1`: does it read a prompt worded unlike its captions ("a happy face" for
  "grinning face")? For each entry {concept, paraphrase} of --paraphrases (default
  scripts/datasets/emoji_paraphrases.json), every image of its concept in base form (no skin
  tone) ranks its entry's paraphrase among up to 99 other entries' paraphrases (the same
  R-precision); R@1 averaged over those images. `paraphrase_r1_seen` over the concepts the
  CLIP trained on (some training image shows them), `paraphrase_r1_heldout` over those it
  never saw (on the emoji corpus, exactly heldout.json's `concepts`); null when a group has
  no entry. `paraphrase_r1` is their image-weighted mean.

Also `images` (images scored, by part and paraphrase group), `seconds` (wall time), and
`clip_data_heldout`: the CLIP run's `data.heldout` when CLIP_DIR is (or is the `model/` of)
a run directory with config.yaml. null there means the CLIP trained on the held-out images
too (as the captioned suite's evaluation CLIP does): its held-out figures then measure
memory, not generalisation.

Prints the JSON; --out also writes it (never over an existing file). Bad arguments are
refused (exit 2) before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from t2i.cli import read_split
from t2i.data.captioned import CaptionedDataset
from t2i.evaluation.captioned import (
    HELDOUT_FILE,
    R_PRECISION_CANDIDATES,
    CaptionPool,
    HeldOutSplit,
    choose,
    embed_images,
    embed_texts,
    heldout_split,
    r_precision,
    read_samples,
)
from t2i.models import CLIPModel, class_of, load_model

PARAPHRASES = Path(__file__).resolve().parent / "datasets" / "emoji_paraphrases.json"
BATCH_SIZE = 256  # images or captions per CLIP call


# ---- inputs ----------------------------------------------------------------------------------


def read_paraphrases(path: str | Path) -> list[dict[str, str]]:
    """The entries of a paraphrase file ({"paraphrases": [{"concept", "paraphrase"}]}),
    checked: both fields non-empty strings, concepts distinct and paraphrases distinct (a
    second entry of a concept, or a shared wording, would be a right answer ranked as wrong).

    Raises:
        ValueError: not such a file (saying what is wrong).
    """
    try:
        entries = json.loads(Path(path).read_text())["paraphrases"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"not a paraphrase file ({type(err).__name__}: {err})") from err
    if not isinstance(entries, list) or len(entries) < 2:
        raise ValueError("`paraphrases` must list at least two entries")
    for i, entry in enumerate(entries):
        fields = [
            entry.get(k) if isinstance(entry, dict) else None for k in ("concept", "paraphrase")
        ]
        if not all(isinstance(f, str) and f.strip() for f in fields):
            raise ValueError(f"entry {i} lacks a non-empty `concept` or `paraphrase`: {entry!r}")
    for field in ("concept", "paraphrase"):
        seen: set[str] = set()
        for entry in entries:
            if entry[field] in seen:
                raise ValueError(f"{field} {entry[field]!r} is in more than one entry")
            seen.add(entry[field])
    return entries


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag and value (None: nothing); reads
    no weights."""
    if args.n < 1 or args.size < 1:
        return f"--n {args.n} / --size {args.size}: both must be at least 1"
    if not args.clip.is_dir():
        return f"CLIP_DIR {args.clip}: no such folder"
    try:
        kind = class_of(args.clip)
    except (OSError, ValueError) as err:  # most name the folder already
        return f"CLIP_DIR {err}" if str(args.clip) in str(err) else f"CLIP_DIR {args.clip}: {err}"
    if not issubclass(kind, CLIPModel):
        return f"CLIP_DIR {args.clip} holds a {kind.__name__}, not a CLIPModel"
    if not (args.data / HELDOUT_FILE).is_file():
        return f"--data {args.data}: no {HELDOUT_FILE} (the held-out split this evaluation reads)"
    try:
        read_split(args.data / HELDOUT_FILE)
    except ValueError as err:
        return f"--data {args.data}: {err}"
    if args.out is not None and args.out.exists():
        return f"--out {args.out} exists; choose another file"
    try:
        read_paraphrases(args.paraphrases)
    except ValueError as err:
        return f"--paraphrases {args.paraphrases}: {err}"
    return None


def concept_of(record: dict) -> Any:
    """A record's concept (its metadata's `concept`; None without one)."""
    return record["meta"].get("concept")


def trained_concepts(data: CaptionedDataset, split: HeldOutSplit) -> set:
    """The concepts some training image (one not held out) shows."""
    return {concept_of(data.records[i]) for i in split.train}


def base_images(data: CaptionedDataset, concepts: list[str]) -> dict[str, list[int]]:
    """concept -> indices of its records in base form (`skin_tone` null), for `concepts`."""
    wanted = {c: [] for c in concepts}
    for i, record in enumerate(data.records):
        concept = concept_of(record)
        if concept in wanted and record["meta"].get("skin_tone") is None:
            wanted[concept].append(i)
    return wanted


def clip_data_heldout(path: Path) -> Any:
    """The `data.heldout` of the run CLIP_DIR is or belongs to (its config.yaml), else
    "unknown" (a bare saved model)."""
    run = path.parent if path.name == "model" else path
    config = run / "config.yaml"
    if not config.is_file():
        return "unknown"
    return ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("heldout")


def load_clip(path: Path) -> CLIPModel:
    """The CLIP of CLIP_DIR in eval mode, on the GPU when there is one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(path, kind=CLIPModel).eval().requires_grad_(False).to(device)


# ---- the two figures -------------------------------------------------------------------------


def caption_r_precision(
    clip: Any, data: CaptionedDataset, split: HeldOutSplit, n: int, seed: int
) -> tuple[dict[str, float], dict[str, int], int]:
    """R@1 of each part's images (up to n, seeded) over the corpus's canonical captions;
    (scores by part, images by part, captions ranked per image)."""
    pool = CaptionPool(data, clip, BATCH_SIZE)  # every distinct canonical caption, embedded
    scores, counts = {}, {}
    for part, indices in choose(split, n, seed).items():
        samples = read_samples(data, indices)
        embeds = embed_images(clip, samples.pixels, BATCH_SIZE)  # (N, D)
        scores[part] = pool.score(embeds, samples.captions, seed)
        counts[part] = len(samples.indices)
    return scores, counts, pool.candidates


def paraphrase_r1(
    clip: Any,
    data: CaptionedDataset,
    split: HeldOutSplit,
    entries: list[dict[str, str]],
    seed: int,
) -> tuple[dict[str, float | None], dict[str, int]]:
    """R@1 of each entry's base-form images over the entries' paraphrases, for concepts
    seen in training and concepts never seen; (scores, images by group)."""
    trained = trained_concepts(data, split)
    entry_of = {e["concept"]: k for k, e in enumerate(entries)}
    images = base_images(data, list(entry_of))
    texts = embed_texts(clip, [e["paraphrase"] for e in entries], BATCH_SIZE)  # (E, D)
    scores: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for group, in_group in (("seen", True), ("heldout", False)):
        indices = [i for c in entry_of if (c in trained) == in_group for i in images[c]]
        if not indices:
            scores[f"paraphrase_r1_{group}"], counts[f"paraphrase_{group}"] = None, 0
            continue
        samples = read_samples(data, indices)
        true = torch.tensor([entry_of[concept_of(data.records[i])] for i in samples.indices])
        embeds = embed_images(clip, samples.pixels, BATCH_SIZE)  # (N, D)
        scores[f"paraphrase_r1_{group}"] = r_precision(
            embeds, true, texts, R_PRECISION_CANDIDATES, seed
        )
        counts[f"paraphrase_{group}"] = len(samples.indices)
    groups = [
        (scores[f"paraphrase_r1_{g}"], counts[f"paraphrase_{g}"]) for g in ("seen", "heldout")
    ]
    overall = sum(s * count for s, count in groups if s is not None) / sum(counts.values())
    return {"paraphrase_r1": overall} | scores, counts


# ---- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = argparse.ArgumentParser(
        prog="python scripts/eval_text_lever.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clip", type=Path, metavar="CLIP_DIR", help="a saved CLIP, or its run")
    p.add_argument("--data", type=Path, required=True, help="a corpus folder with heldout.json")
    p.add_argument("--size", type=int, default=32, help="image side the data is read at")
    p.add_argument("--n", type=int, default=256, help="images per part, at most")
    p.add_argument("--seed", type=int, default=0, help="seeds the images and captions drawn")
    p.add_argument("--out", type=Path, help="also write the JSON here (a new file)")
    p.add_argument("--paraphrases", type=Path, default=PARAPHRASES, help="{concept, paraphrase}")
    return p


def prepare(args: argparse.Namespace) -> tuple[CaptionedDataset, HeldOutSplit, list] | str:
    """The data set, its split and the paraphrase entries, or what is wrong with them."""
    try:
        data = CaptionedDataset(args.data, args.size)
        split = heldout_split(data, args.data)
    except (OSError, ValueError) as err:
        return f"--data {args.data}: {err}"
    entries = read_paraphrases(args.paraphrases)
    images = base_images(data, [e["concept"] for e in entries])
    missing = [c for c, indices in images.items() if not indices]
    if missing:
        return (
            f"--paraphrases {args.paraphrases}: {len(missing)} concepts have no base-form "
            f"image in --data {args.data}, e.g. {missing[0]!r}"
        )
    return data, split, entries


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); the exit status (2: bad arguments)."""
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    prepared = prepare(args) if problem is None else problem
    if isinstance(prepared, str):
        print(f"error: {prepared}", file=sys.stderr)
        return 2
    data, split, entries = prepared
    heldout_setting = clip_data_heldout(args.clip)
    if heldout_setting is None:
        print(
            f"warning: {args.clip} trained on held-out images too (data.heldout: null)",
            file=sys.stderr,
        )
    clip = load_clip(args.clip)
    with torch.no_grad():
        r_prec, counts, candidates = caption_r_precision(clip, data, split, args.n, args.seed)
        paraphrase, paraphrase_counts = paraphrase_r1(clip, data, split, entries, args.seed)
    trained = trained_concepts(data, split)
    results = {
        "clip": str(args.clip),
        "data": str(args.data),
        "clip_data_heldout": heldout_setting,
        "size": args.size,
        "n": args.n,
        "seed": args.seed,
        "r_precision": r_prec,
        "r_precision_candidates": candidates,
        **paraphrase,
        "paraphrase_candidates": min(R_PRECISION_CANDIDATES, len(entries)),
        "paraphrase_entries": {
            "seen": sum(e["concept"] in trained for e in entries),
            "heldout": sum(e["concept"] not in trained for e in entries),
        },
        "images": counts | paraphrase_counts,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "x") as f:  # never over a file written meanwhile
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
