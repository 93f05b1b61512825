"""The captioned suite: how well a pipeline trained on a user's captioned images does, measured
with an evaluation CLIP trained apart from the pipeline (no downloaded weights).

    python -m t2i.evaluate PIPELINE --suite captioned --data DIR [--n N] [--routes dalle ldm]

The data set is split into the pipeline's training and held-out samples (`heldout_split`:
the pipeline's heldout.json when it has one, else the training split recomputed), and every
route of the pipeline samples one image per caption at its recorded sampling defaults, never
reranked (`SELECTION_OFF`: the pipeline's own CLIP picks nothing that is scored).

Parts. The samples scored come in parts of up to N each (`--n`, drawn at random, seeded):
`train` (training captions) and the held-out parts. A heldout.json may name the latter
(`"parts": {NAME: [sources]}`, each source held out, `held_out` their union; the emoji corpus
names `cells`, `concepts` and `skin_tones`); without parts (older files, a recomputed split)
there is one, `heldout`. Every per-part figure is keyed `FIGURE_PART` (`r_precision_cells`),
the same in `real` (on the part's real images: the ceiling) and per route (on the images
drawn for the part's captions). `n` gives each part's count and `heldout` that of all
held-out parts together (each sample once): the images of CLIP-FID / CLIP-KID, of the
reconstruction figures and of `heldout_used`. Measures:

- R-precision (Xu et al. 2018, AttnGAN; DALL-Eval, Cho et al. 2023): each image's caption is
  ranked among itself and `R_PRECISION_CANDIDATES - 1` other captions of the data set (distinct
  texts, drawn at random, seeded) by the evaluation CLIP's cosine similarity; R@1 is the share
  of images whose own caption comes first (strictly above every other). `r_precision_PART`:
  `r_precision_train` and `r_precision_heldout` (or one per named part).
  `r_precision_candidates` is the number ranked (fewer when the data set has fewer captions).
- Style (when the data set's records carry a `style`, `t2i.data.captioned`'s `meta`, with
  at least two styles among the training samples): `StyleClassifier`, a multinomial logistic
  regression over the evaluation CLIP's image embeddings, fit (LBFGS, full batch, from zero)
  to up to `STYLE_FIT_IMAGES` real training images (drawn at random, seeded) and their styles
  (`style_classifier`: {styles, images, accuracy on those images}). `style_right_PART`: the
  share of images whose predicted style is their caption's (its sample's); in `real`, the
  classifier's accuracy on the part's real images (the ceiling; `train`'s are mostly images
  it was fit on). Only parts with styled samples get one.
- CLIP-FID and CLIP-KID (Heusel et al. 2017; Binkowski et al. 2018; Kynkaanniemi et al.
  2023 for CLIP features): torchmetrics' Frechet / kernel distances over the evaluation CLIP's
  image embeddings (`ClipImageFeatures`), images of held-out captions (all parts together)
  against the real held-out images (`clip_fid`, `clip_kid` {mean, std}); the floor
  (`real.clip_fid_floor`, `real.clip_kid_floor`) is as many real training images (those
  scored, or all when fewer) against the same held-out ones.
  Not comparable with Inception FID figures, hence never named "fid".
- The image tokenizer's reconstruction of the held-out images: `psnr` (dB), `codebook_usage`
  (share of codes used) and `perplexity` (dicts by level for a two-level tokenizer); for a
  pipeline with the latent diffusion route, its autoencoder's `vae.psnr`. Under each,
  `reconstructed`: every part's `r_precision_PART` (and `style_right_PART`) on the real
  images passed through it, decode(encode(x)): the most a route drawing through it can reach.
- Per route: `images_per_s`, the sampling speed (all the route's images over its wall time).

Knows no model family: the evaluation CLIP is anything with `tokenize`, `encode_text` and
`encode_image` (unit-norm embeddings of images on [-1, 1]); a tokenizer has `encode`, `decode`
and `num_tokens`; an autoencoder `encode` and `decode`; a route's pipeline is called like a
diffusers pipeline.

The evaluation CLIP is trained once per data set and config (`cached_eval_clip`), in
ROOT/KEY with KEY the first 16 hex digits of sha256(data fingerprint, config hash):
`data_fingerprint` hashes every usable record (its source relative to the data folder, its
captions, and its image file's size and modification time, or the bytes' hash for images stored
in a table); `config_hash` hashes the resolved config without the keys that do not change the
model (output folder, resume, cache folder, workers, the data's path: the fingerprint stands
for what it holds). A changed image, caption or config trains another; the same reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.utils import save_image

from t2i.cli import read_split
from t2i.config import DataConfig, ExperimentConfig, to_dict
from t2i.data.captioned import CaptionedDataset, relative_source
from t2i.nn.metrics import psnr
from t2i.nn.quantizer import code_statistics

logger = logging.getLogger(__name__)

HELDOUT_FILE = "heldout.json"  # in a pipeline: its data set's held-out sources
R_PRECISION_CANDIDATES = 100  # 1 true caption + 99 others (AttnGAN's R-precision)
KID_SUBSET_SIZE = 1000  # torchmetrics' default; smaller when there are fewer images
KID_SUBSETS = 100
STYLE_FIT_IMAGES = 2000  # real training images the style classifier is fit on, at most
STYLE_STEPS = 200  # LBFGS iterations of its one full-batch fit
STYLE_L2 = 1e-3  # its weight decay, on standardized embeddings
RESERVED_PARTS = ("train", "heldout")  # names the suite gives its own parts
SELECTION_OFF = {  # no choice by the pipeline's own CLIP
    "dalle": {"rerank": 0},
    "unclip": {"prior_candidates": 1},
}
UNHASHED = ("train.output_dir", "train.resume", "data.path", "data.token_cache")
UNHASHED += ("data.num_workers",)


# ---- the held-out split ----------------------------------------------------------------------


@dataclasses.dataclass
class HeldOutSplit:
    """Which records of a data set the pipeline trained on and which it never saw.

    Args:
        train: indices into `data.records` of the training samples.
        heldout: indices of the held-out samples (disjoint from `train`).
        source: "heldout.json" (the pipeline's record) or "recomputed" (the split redone
            from its prior's data config).
        parts: heldout.json's named parts of the held-out samples (name -> indices, each
            within `heldout`); {} when it names none.
    """

    train: list[int]
    heldout: list[int]
    source: str
    parts: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def data_root(data: CaptionedDataset) -> Path:
    """The folder a data set's sources are made relative to (the path itself, resolved)."""
    return data.path.resolve()


def heldout_split(
    data: CaptionedDataset,
    pipeline_dir: str | Path,
    data_config: dict | None = None,
    split_file: str | Path | None = None,
) -> HeldOutSplit:
    """The split of `data` the suite scores: `split_file` when given (a heldout.json of
    another data set than the pipeline's, such as the one it is scored on), else the
    pipeline's heldout.json when present, else `data.split(num_val, seed)` with the prior's
    data config (`data_config`, the `data` section of prior/config.yaml; its missing keys
    take `DataConfig`'s defaults).

    Args:
        data: the whole data set.
        pipeline_dir: the saved pipeline.
        data_config: the prior's data section (used only without a heldout.json).
        split_file: a heldout.json to use instead of the pipeline's.

    Raises:
        ValueError: the split file names none of the data set's samples, or is malformed.
    """
    if split_file is not None:
        return _split_from_file(data, Path(split_file), source=str(split_file))
    record = Path(pipeline_dir) / HELDOUT_FILE
    if record.is_file():
        return _split_from_file(data, record)
    config = data_config or {}
    num_val = config.get("num_val", DataConfig.num_val)
    _, val = data.split(num_val, config.get("seed", DataConfig.seed))
    held = {id(r) for r in val.records}
    indices = range(len(data.records))
    return HeldOutSplit(
        train=[i for i in indices if id(data.records[i]) not in held],
        heldout=[i for i in indices if id(data.records[i]) in held],
        source="recomputed",
    )


def _split_from_file(
    data: CaptionedDataset, record: Path, source: str = HELDOUT_FILE
) -> HeldOutSplit:
    """The split a heldout.json records: its sources held out, every other record training;
    `source` names it in the report."""
    written = read_split(record)
    listed = set(written["held_out"])
    root = data_root(data)
    if written.get("data_path") and Path(written["data_path"]).resolve() != root:
        logger.warning(
            "%s was written for %s; matching its sources in %s", record, written["data_path"], root
        )
    sources = [relative_source(r["source"], root) for r in data.records]
    heldout = [i for i, s in enumerate(sources) if s in listed]
    if not heldout:
        raise ValueError(f"{record}: none of its {len(listed)} held-out sources is in {data.path}")
    if len(heldout) < len(listed):
        logger.warning(
            "%s: %d held-out sources are not in %s", record, len(listed) - len(heldout), data.path
        )
    chosen = set(heldout)
    train = [i for i in range(len(sources)) if i not in chosen]
    parts = _parts_from_file(written.get("parts") or None, listed, sources, heldout, record)
    return HeldOutSplit(train=train, heldout=heldout, source=source, parts=parts)


def _parts_from_file(
    parts: Any, listed: set[str], sources: list[str], heldout: list[int], record: Path
) -> dict[str, list[int]]:
    """heldout.json's `parts` ({name: [sources]}, each held out) as indices into the records;
    a part none of whose sources is in the data set is left out (and logged)."""
    if parts is None:
        return {}
    if not isinstance(parts, dict) or not all(isinstance(v, list) for v in parts.values()):
        raise ValueError(f"{record}: `parts` is not a dict of source lists")
    found = {}
    for name, part in parts.items():
        if name in RESERVED_PARTS:
            raise ValueError(f"{record}: part {name!r}: the suite names its own parts so")
        if not set(part) <= listed:
            raise ValueError(f"{record}: part {name!r} lists sources that are not held out")
        members = set(part)
        found[name] = [i for i in heldout if sources[i] in members]
        if not found[name]:
            logger.warning("%s: part %r is left out: it names no sample here", record, name)
            del found[name]
    return found


# ---- the evaluation CLIP, trained once per data set ------------------------------------------


def data_fingerprint(data: CaptionedDataset) -> str:
    """sha256 of a data set's usable records: each one's source relative to the data folder,
    its captions, and its image file's size and modification time (a stored image: its
    bytes' sha256), in the data set's order."""
    root, digest = data_root(data), hashlib.sha256(data.format.encode())
    for record in data.records:
        image = record["image"]
        if isinstance(image, bytes):
            stamp = hashlib.sha256(image).hexdigest()
        elif image is not None and Path(image).is_file():
            stat = Path(image).stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        else:
            stamp = "missing"
        line = [relative_source(record["source"], root), record["caption"], stamp]
        digest.update(json.dumps(line).encode() + b"\n")
    return digest.hexdigest()


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of a config's resolved keys, less those that do not change the model (`UNHASHED`)."""
    flat = {
        f"{section}.{key}": value
        for section, values in to_dict(config).items()
        for key, value in (values.items() if isinstance(values, dict) else [("", values)])
    }
    kept = {k: v for k, v in flat.items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def eval_clip_key(config: ExperimentConfig, data: CaptionedDataset) -> str:
    """The cache folder's name: 16 hex digits of sha256(data fingerprint, config hash)."""
    both = f"{data_fingerprint(data)}\n{config_hash(config)}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]


def cached_eval_clip(
    config: ExperimentConfig,
    data: CaptionedDataset,
    root: str | Path,
    train: Callable[[ExperimentConfig, str], Any],
    where: str = "eval CLIP config",
) -> Path:
    """The evaluation CLIP's saved model for this data set and config: ROOT/KEY/model, trained
    there first (through `train`, resuming a run cut short) when it is not yet there.

    Args:
        config: the evaluation CLIP's config, its data section on `data` (changed here:
            `train.output_dir` and `train.resume`).
        data: the data set it trains on (for the fingerprint).
        root: the cache folder.
        train: the trainer (`t2i.train.run`): config, where -> a result with `model_dir`.
        where: the config's source, named in errors.
    """
    folder = Path(root) / eval_clip_key(config, data)
    model = folder / "model"
    if (model / "config.json").is_file():
        logger.info("evaluation CLIP: reusing %s", model)
        return model
    logger.info("evaluation CLIP: training it into %s (once for this data set)", folder)
    config.train.output_dir, config.train.resume = str(folder), "latest"
    result = train(config, where)
    stamp = {"data": str(data.path), "data_fingerprint": data_fingerprint(data)}
    stamp |= {"config_hash": config_hash(config), "samples": len(data.records)}
    (folder / "eval_clip.json").write_text(json.dumps(stamp, indent=1) + "\n")
    return Path(result.model_dir)


# ---- reading samples, embedding them ---------------------------------------------------------


@dataclasses.dataclass
class Samples:
    """Real samples of a data set: `pixels` (N, 3, S, S) on [-1, 1], each one's first
    `caption`, its `source` (relative to the data folder), its `style` (its metadata's, else
    None) and its record's `index` in `data.records`."""

    pixels: torch.Tensor
    captions: list[str]
    sources: list[str]
    styles: list[Any]
    indices: list[int]


def read_samples(data: CaptionedDataset, indices: Sequence[int]) -> Samples:
    """The records `indices` of `data` (an unreadable image is left out, and logged).

    Args:
        data: the data set (at the image size wanted).
        indices: into `data.records`.
    """
    pixels, captions, sources, styles, kept = [], [], [], [], []
    root = data_root(data)
    for i in indices:
        record = data.records[i]
        sample = data[i]
        if record["source"] in data.bad:  # `data[i]` gave the next readable sample
            continue
        pixels.append(sample["pixel_values"])
        captions.append(record["caption"][0])
        sources.append(relative_source(record["source"], root))
        styles.append(style_of(record))
        kept.append(i)
    if not pixels:
        raise ValueError(f"{data.path}: none of {len(indices)} images could be read")
    return Samples(torch.stack(pixels), captions, sources, styles, kept)


def style_of(record: dict) -> Any:
    """A record's style: its metadata's `style` field (None when it has none)."""
    return record.get("meta", {}).get("style")


def held_out_together(parts: Sequence[Samples], images: Sequence[torch.Tensor]) -> Samples:
    """The held-out parts' samples as one set, each record once (in its first part), with
    `images` (one (N, 3, H, W) tensor per part: the real pixels, or images drawn) as pixels."""
    seen, rows = set(), []  # (part's samples, its images, position in the part)
    for samples, pixels in zip(parts, images, strict=True):
        for k, index in enumerate(samples.indices):
            if index not in seen:
                seen.add(index)
                rows.append((samples, pixels, k))
    return Samples(
        torch.stack([pixels[k] for _, pixels, k in rows]),
        [samples.captions[k] for samples, _, k in rows],
        [samples.sources[k] for samples, _, k in rows],
        [samples.styles[k] for samples, _, k in rows],
        [samples.indices[k] for samples, _, k in rows],
    )


@torch.no_grad()
def embed_images(clip: Any, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Unit-norm image embeddings (N, D) in float32 on the CPU, of images on [-1, 1]."""
    out = [
        clip.encode_image(images[i : i + batch_size]).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def embed_texts(clip: Any, captions: Sequence[str], batch_size: int) -> torch.Tensor:
    """Unit-norm caption embeddings (N, D) in float32 on the CPU."""
    device = next(clip.parameters()).device
    out = []
    for i in range(0, len(captions), batch_size):
        ids = clip.tokenize(list(captions[i : i + batch_size]), warn=False).to(device)
        out.append(clip.encode_text(ids).float().cpu())
    return torch.cat(out)


# ---- R-precision -----------------------------------------------------------------------------


def r_precision(
    image_embeds: torch.Tensor,
    true_index: torch.Tensor,
    text_embeds: torch.Tensor,
    candidates: int = R_PRECISION_CANDIDATES,
    seed: int = 0,
) -> float:
    """R@1: the share of images whose own caption scores strictly above each of
    `candidates - 1` other captions drawn at random (AttnGAN's R-precision).

    Args:
        image_embeds: (N, D) unit-norm image embeddings.
        true_index: (N,) each image's caption, an index into `text_embeds`.
        text_embeds: (C, D) unit-norm embeddings of the distinct captions.
        candidates: captions ranked per image, the true one included (at most C).
        seed: seeds the draw of the other captions (the same seed, the same draws).
    """
    others = min(candidates, len(text_embeds)) - 1
    if others < 1:
        raise ValueError("R-precision needs at least two distinct captions")
    generator = torch.Generator().manual_seed(seed)
    hits = 0
    for image, true in zip(image_embeds, true_index.tolist(), strict=True):
        drawn = torch.randperm(len(text_embeds) - 1, generator=generator)[:others]
        drawn = drawn + (drawn >= true).long()  # skip the true caption
        sims = text_embeds[torch.cat([torch.tensor([true]), drawn])] @ image  # (others + 1,)
        hits += int(sims[0] > sims[1:].max())
    return hits / len(image_embeds)


class CaptionPool:
    """The distinct captions of a data set (each record's first) and their embeddings.

    Args:
        data: the whole data set.
        clip: the evaluation CLIP.
        batch_size: captions per text-encoder call.
    """

    def __init__(self, data: CaptionedDataset, clip: Any, batch_size: int) -> None:
        self.captions = sorted({r["caption"][0] for r in data.records})
        self.index = {c: i for i, c in enumerate(self.captions)}
        self.embeds = embed_texts(clip, self.captions, batch_size)  # (C, D)

    @property
    def candidates(self) -> int:
        """Captions ranked per image: 100, or all when the data set has fewer."""
        return min(R_PRECISION_CANDIDATES, len(self.captions))

    def score(self, image_embeds: torch.Tensor, captions: Sequence[str], seed: int) -> float:
        """R-precision of images (N, D) of `captions` (see `r_precision`)."""
        true = torch.tensor([self.index[c] for c in captions])
        return r_precision(image_embeds, true, self.embeds, self.candidates, seed)


# ---- the style classifier --------------------------------------------------------------------


@dataclasses.dataclass
class StyleClassifier:
    """Multinomial logistic regression over image embeddings: which style an image is in.

    Args:
        styles: the classes, sorted.
        weight: (D, K) over standardized embeddings; `bias` (K,).
        mean: (D,) the fit embeddings' mean; `std` (D,) their spread (standardizing).
    """

    styles: list[Any]
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(
        cls, embeds: torch.Tensor, labels: Sequence[Any], steps: int = STYLE_STEPS
    ) -> StyleClassifier:
        """Fit to embeddings (N, D) and their styles: cross-entropy plus `STYLE_L2` times the
        squared weights, minimized full batch by LBFGS from zero (no randomness)."""
        styles = sorted(set(labels))
        target = torch.tensor([styles.index(label) for label in labels])
        mean, std = embeds.mean(0), embeds.std(0, correction=0).clamp_min(1e-4)
        x = (embeds - mean) / std  # (N, D)
        weight = torch.zeros(x.shape[1], len(styles), requires_grad=True)
        bias = torch.zeros(len(styles), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, target) + STYLE_L2 * weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():  # the suite runs under no_grad
            optimizer.step(closure)
        return cls(styles, weight.detach(), bias.detach(), mean, std)

    def predict(self, embeds: torch.Tensor) -> list[Any]:
        """The style of each embedding (N, D)."""
        logits = (embeds - self.mean) / self.std @ self.weight + self.bias  # (N, K)
        return [self.styles[k] for k in logits.argmax(-1).tolist()]

    def right(self, embeds: torch.Tensor, labels: Sequence[Any]) -> float | None:
        """The share of embeddings (N, D) whose predicted style is their label, over those
        with one (None: no label at all)."""
        pairs = [(p, t) for p, t in zip(self.predict(embeds), labels, strict=True) if t is not None]
        return sum(p == t for p, t in pairs) / len(pairs) if pairs else None


def fit_style_classifier(
    data: CaptionedDataset, train: Sequence[int], clip: Any, batch_size: int, seed: int
) -> tuple[StyleClassifier, dict[str, Any]] | None:
    """The style classifier over the evaluation CLIP's embeddings of up to `STYLE_FIT_IMAGES`
    real training images with a style (drawn at random, seeded), and what it was fit on
    ({styles, images, accuracy on them}); None when they hold fewer than two styles."""
    labelled = [i for i in train if style_of(data.records[i]) is not None]
    if len({style_of(data.records[i]) for i in labelled}) < 2:
        return None
    samples = read_samples(data, pick(labelled, STYLE_FIT_IMAGES, seed + 2))
    embeds = embed_images(clip, samples.pixels, batch_size)
    classifier = StyleClassifier.fit(embeds, samples.styles)
    accuracy = classifier.right(embeds, samples.styles)
    fitted = {"styles": classifier.styles, "images": len(embeds), "accuracy": accuracy}
    return classifier, fitted


# ---- CLIP-FID and CLIP-KID -------------------------------------------------------------------


class ClipImageFeatures(torch.nn.Module):
    """torchmetrics' custom `feature` extractor: images (N, 3, H, W) as float on [0, 1] (the
    metrics' `normalize=True` form) -> the evaluation CLIP's image embeddings (N, D), float32.

    Args:
        clip: has `encode_image` of images on [-1, 1]; `num_features` is probed with one image.
        image_size: the side of the probe image.
    """

    def __init__(self, clip: Any, image_size: int) -> None:
        super().__init__()
        self.clip = clip
        probe = torch.rand(1, 3, image_size, image_size)
        self.num_features = int(self(probe).shape[-1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images * 2 - 1).float()


def clip_distances(
    features: ClipImageFeatures,
    fake: torch.Tensor,
    real: torch.Tensor,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """CLIP-FID and CLIP-KID of image sets (N, 3, H, W) on [-1, 1], through torchmetrics.

    Args:
        features: the evaluation CLIP as a feature extractor.
        fake: the images scored (generated, or the floor's real training images).
        real: the reference images.
        batch_size: images per feature call.
        seed: seeds KID's draw of subsets.

    Returns:
        {"clip_fid": float, "clip_kid": {"mean", "std", "subset_size"}}.
    """
    if min(len(fake), len(real)) < 2:
        raise ValueError("CLIP-FID and CLIP-KID need at least 2 images in each set")
    subset = min(KID_SUBSET_SIZE, len(fake), len(real))
    device = next(features.parameters()).device
    fid = FrechetInceptionDistance(feature=features, normalize=True).to(device)
    with warnings.catch_warnings():  # that it keeps every feature: a few MB here
        warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance`", UserWarning)
        kid = KernelInceptionDistance(
            feature=features, subsets=KID_SUBSETS, subset_size=subset, normalize=True
        ).to(device)
    for images, is_real in ((fake, False), (real, True)):
        for i in range(0, len(images), batch_size):
            batch = ((images[i : i + batch_size] + 1) / 2).to(device)  # [0, 1]
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return {
        "clip_fid": float(fid.compute()),
        "clip_kid": {"mean": float(mean), "std": float(std), "subset_size": subset},
    }


# ---- reconstruction --------------------------------------------------------------------------


@torch.no_grad()
def tokenizer_report(tokenizer: Any, images: torch.Tensor, batch_size: int = 100) -> dict:
    """PSNR of an image tokenizer's reconstructions, and its codebook usage and perplexity.

    Args:
        tokenizer: `encode` (images on [-1, 1] -> codes, or a tuple of code grids, one per
            level), `decode` and `num_tokens`.
        images: (N, 3, S, S) on [-1, 1], at the tokenizer's image size.
        batch_size: images per call.
    """
    scores, grids = [], []
    for x, y, tokens in _round_trips(tokenizer, images, batch_size):
        scores.append(psnr(y, x).cpu())
        grids.append([t.cpu() for t in (tokens if isinstance(tokens, tuple) else (tokens,))])
    levels = ["top", "bottom"] if len(grids[0]) == 2 else ["codes"]
    usage, perplexity = {}, {}
    for i, name in enumerate(levels):
        p, u = code_statistics(torch.cat([g[i] for g in grids]), tokenizer.num_tokens)
        usage[name], perplexity[name] = round(float(u), 4), round(float(p), 2)
    one = len(levels) == 1
    return {
        "psnr": float(torch.cat(scores).mean()),
        "codebook_usage": usage["codes"] if one else usage,
        "perplexity": perplexity["codes"] if one else perplexity,
        "images": len(images),
    }


@torch.no_grad()
def autoencoder_psnr(vae: Any, images: torch.Tensor, batch_size: int = 100) -> dict:
    """PSNR of an autoencoder's reconstructions `decode(encode(x))` of images on [-1, 1]
    (resized to its `image_size` when that differs)."""
    size = getattr(vae, "image_size", images.shape[-1])
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic").clamp(-1, 1)
    scores = [psnr(y, x).cpu() for x, y, _ in _round_trips(vae, images, batch_size)]
    return {"psnr": float(torch.cat(scores).mean()), "images": len(images)}


def _round_trips(model: Any, images: torch.Tensor, batch_size: int):
    """(x, decode(encode(x)) clamped, encode(x)) per batch, on the model's device."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        codes = model.encode(x.to(dtype))
        yield x, model.decode(codes).float().clamp(-1, 1), codes


# ---- the routes ------------------------------------------------------------------------------


@torch.no_grad()
def sample_route(
    pipe: Any, route: str, captions: Sequence[str], batch_size: int, seed: int
) -> tuple[torch.Tensor, dict]:
    """One image per caption (N, 3, H, W) on [-1, 1], on the CPU, at the route's recorded
    sampling defaults less any choice by its CLIP (`SELECTION_OFF`); and the settings used."""
    generator = torch.Generator().manual_seed(seed)
    images, settings = [], {}
    for i in range(0, len(captions), batch_size):
        out = pipe(
            list(captions[i : i + batch_size]),
            num_images_per_prompt=1,
            generator=generator,
            output_type="pt",
            **SELECTION_OFF.get(route, {}),
        )
        images.append(out.images.float().cpu() * 2 - 1)
        settings = out.settings.as_dict()
    return torch.cat(images), settings


def score_route(
    pipe: Any,
    route: str,
    reals: dict[str, Samples],
    held_parts: Sequence[str],
    judge: Judge,
    batch_size: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A route's scores on each part's captions (`Judge.part_scores`), CLIP-FID and CLIP-KID
    of its images of the held-out parts' captions against the real ones, and its speed; and
    the images it drew, by part."""
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    made = {}
    for part, samples in reals.items():
        made[part], settings = sample_route(pipe, route, samples.captions, batch_size, seed)
    seconds = time.perf_counter() - start
    results: dict[str, Any] = {"settings": settings}
    for part, images in made.items():
        results |= judge.part_scores(images, reals[part], part)
    held = [reals[p] for p in held_parts]
    fake = held_out_together(held, [made[p] for p in held_parts]).pixels
    real = held_out_together(held, [s.pixels for s in held]).pixels
    results |= judge.distances(fake, real)
    count = sum(len(images) for images in made.values())
    results |= {"images": count, "seconds": seconds, "images_per_s": count / seconds}
    logger.info("route %s: %s", route, results)
    return results, made


def write_grids(
    folder: Path, route: str, reals: dict[str, Samples], made: dict[str, torch.Tensor], k: int = 8
) -> None:
    """ROUTE_PART.png per part (train, heldout): up to two rows of k real images, the images
    drawn for their captions in as many rows below; ROUTE_PART.txt, the captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, samples in reals.items():
        cols = min(k, len(samples.captions))
        m = cols * min(2, len(samples.captions) // cols)  # one or two full rows
        rows = torch.cat([samples.pixels[:m], made[part][:m]])
        path = folder / f"{route}_{part}.png"
        save_image((rows.float().clamp(-1, 1) + 1) / 2, path, nrow=cols, padding=1)
        lines = [f"{i}: {c}" for i, c in enumerate(samples.captions[:m])]
        (folder / f"{route}_{part}.txt").write_text("\n".join(lines) + "\n")


class Judge:
    """The evaluation CLIP's measures over one data set: R-precision against its caption pool,
    the style classifier's verdicts, and the CLIP-FID / CLIP-KID feature extractor.

    Args:
        clip: the evaluation CLIP (in eval mode, on its device).
        data: the whole data set (the caption pool).
        batch_size: images or captions per call.
        seed: seeds the draws of other captions and KID's subsets.
        styles: a style classifier over the evaluation CLIP's image embeddings, or None.
    """

    def __init__(
        self,
        clip: Any,
        data: CaptionedDataset,
        batch_size: int,
        seed: int,
        styles: StyleClassifier | None = None,
    ) -> None:
        self.clip, self.batch_size, self.seed, self.styles = clip, batch_size, seed, styles
        self.pool = CaptionPool(data, clip, batch_size)
        self.features = ClipImageFeatures(clip, data.image_size)

    def r_precision(self, images: torch.Tensor, captions: Sequence[str]) -> float:
        """R@1 of images (N, 3, H, W) on [-1, 1] of `captions`."""
        embeds = embed_images(self.clip, images, self.batch_size)
        return self.pool.score(embeds, captions, self.seed)

    def part_scores(self, images: torch.Tensor, samples: Samples, part: str) -> dict[str, float]:
        """`r_precision_PART` of images (N, 3, H, W) on [-1, 1] of `samples`' captions and,
        with a style classifier and samples with a style, `style_right_PART`: the share of
        images whose predicted style is their sample's."""
        embeds = embed_images(self.clip, images, self.batch_size)
        scores = {f"r_precision_{part}": self.pool.score(embeds, samples.captions, self.seed)}
        if self.styles is not None and any(s is not None for s in samples.styles):
            scores[f"style_right_{part}"] = self.styles.right(embeds, samples.styles)
        return scores

    def distances(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
        """CLIP-FID and CLIP-KID (see `clip_distances`)."""
        return clip_distances(self.features, fake, real, self.batch_size, self.seed)


# ---- the suite -------------------------------------------------------------------------------


def pick(indices: Sequence[int], n: int, seed: int) -> list[int]:
    """n of `indices` drawn at random (seeded), in their order; all when there are fewer."""
    if n >= len(indices):
        return list(indices)
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return [indices[i] for i in sorted(order[:n].tolist())]


def real_measures(
    reals: dict[str, Samples], held: Samples, floor: Samples, judge: Judge
) -> dict[str, Any]:
    """The ceilings and floors of the real images: each part's scores (`Judge.part_scores`)
    on its real images, and CLIP-FID / CLIP-KID of real training images (`floor`) against
    the held-out ones (`held`)."""
    results = {}
    for part, samples in reals.items():
        results |= judge.part_scores(samples.pixels, samples, part)
    distances = judge.distances(floor.pixels, held.pixels)
    results["clip_fid_floor"] = distances["clip_fid"]
    results["clip_kid_floor"] = distances["clip_kid"]
    return results


def choose(split: HeldOutSplit, n: int, seed: int) -> dict[str, list[int]]:
    """The records scored, by part: up to `n` training ones (`train`), and up to `n` of each
    held-out part (its heldout.json's parts, else all held-out records as `heldout`)."""
    held_parts = split.parts or {"heldout": split.heldout}
    return {"train": pick(split.train, n, seed)} | {
        part: pick(indices, n, seed) for part, indices in held_parts.items()
    }


def floor_indices(chosen: dict[str, list[int]], split: HeldOutSplit, seed: int) -> list[int]:
    """The floor's real training images, as many as the held-out ones chosen (each once):
    drawn from the training records scored, or from all of them when those are fewer."""
    count = len({i for part, indices in chosen.items() if part != "train" for i in indices})
    scored = chosen["train"]
    return pick(scored if len(scored) >= count else split.train, count, seed + 1)


@torch.no_grad()
def evaluate_captioned(
    bundle: Any,
    clip: Any,
    data: CaptionedDataset,
    split: HeldOutSplit,
    n: int = 1000,
    routes: Sequence[str] | None = None,
    batch_size: int = 50,
    seed: int = 0,
    grids: str | Path | None = None,
) -> dict[str, Any]:
    """The captioned suite (see the module docstring for every key).

    Args:
        bundle: a `TextToImagePipeline` (`routes`, `route(name)`, an `image_tokenizer` or a
            `vae` for the latent diffusion route).
        clip: the evaluation CLIP, in eval mode on the bundle's device.
        data: the whole data set, at the pipeline's image size.
        split: its training and held-out records (and the held-out parts, if named).
        n: captions scored per part (training, and each held-out part), at most; drawn at
            random, seeded.
        routes: the routes scored (default: every one the bundle has).
        batch_size: prompts per pipeline call, images per CLIP call.
        seed: seeds the captions drawn, the sampling, and the metrics' draws.
        grids: a folder for grids of real and drawn images (`write_grids`), or None.
    """
    chosen = choose(split, n, seed)
    reals = {part: read_samples(data, indices) for part, indices in chosen.items()}
    held_parts = [part for part in reals if part != "train"]
    held = held_out_together([reals[p] for p in held_parts], [reals[p].pixels for p in held_parts])
    floor = read_samples(data, floor_indices(chosen, split, seed))
    styles = fit_style_classifier(data, split.train, clip, batch_size, seed)
    judge = Judge(clip, data, batch_size, seed, styles[0] if styles else None)
    results: dict[str, Any] = {
        "split": split.source,
        "n": {part: len(samples.captions) for part, samples in reals.items()},
        "r_precision_candidates": judge.pool.candidates,
        "heldout_used": held.sources,
        "floor_used": floor.sources,
    }
    results["n"]["heldout"] = len(held.captions)  # all held-out parts together
    if styles is not None:
        results["style_classifier"] = styles[1]
    results["real"] = real_measures(reals, held, floor, judge)
    results["routes"] = {}
    for route in routes or bundle.routes:
        pipe = bundle.route(route)
        scores, made = score_route(pipe, route, reals, held_parts, judge, batch_size, seed)
        results["routes"][route] = scores
        if grids is not None:
            write_grids(Path(grids), route, reals, made)
    for name, report in (("image_tokenizer", tokenizer_report), ("vae", autoencoder_psnr)):
        model = getattr(bundle, name, None)
        if model is not None:
            results[name] = report(model, held.pixels, batch_size)
            results[name]["reconstructed"] = reconstruction_scores(model, reals, judge, batch_size)
    return results


def reconstruction_scores(
    model: Any, reals: dict[str, Samples], judge: Judge, batch_size: int
) -> dict[str, float]:
    """Each part's scores (`Judge.part_scores`) on the real images passed through an
    autoencoder or tokenizer, decode(encode(x)): the ceiling of every route drawing through
    it (what the evaluation CLIP still reads once the images are reconstructed)."""
    scores = {}
    for part, samples in reals.items():
        trips = _round_trips(model, samples.pixels, batch_size)
        rebuilt = torch.cat([y.cpu() for _, y, _ in trips])
        scores |= judge.part_scores(rebuilt, samples, part)
    return scores
