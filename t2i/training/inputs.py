"""What a model reads -> how it is prepared: the one place that turns a model's declared inputs
(`model.reads`, see `t2i.models.base`) into data sets and batch transforms.

- `pixel_values`, `input_ids`, `negative_input_ids`: the data set and its collator, as they are;
- `image_tokens`: an image tokenizer's code grids, encoded once and cached (`data.tokenizer`);
- `text_states`, `text_embeds`: a frozen CLIP's caption token states and pooled text embedding,
  from one text-tower pass per batch (`data.clip`);
- `image_embeds`: the same CLIP's image embedding: cached beside the codes, cached alone for a
  model that reads no image, or computed per batch for a model that reads the pixels;
- `latents`: a KL autoencoder's scaled latents (posterior means), encoded once and cached
  (`data.autoencoder`).
Captions dropped for classifier-free guidance (`data.caption_drop_prob`) are replaced by the
empty caption in the training set itself (`CaptionDropped`), before the collator tokenizes
them; the validation set keeps all of its captions.

It knows no model family: the readers (a tokenizer, a CLIP) are passed in, used through their
methods (`encode`, `decode`, `text_features`, `encode_image`) and checked against the reading
model's config by the keys below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from t2i.data.tokens import (
    TokenDataset,
    cached_tokens,
    encode_dataset,
    fingerprint,
    model_description,
)

PROVIDERS = {  # a prepared input -> the data key naming the trained model that prepares it
    "image_tokens": "tokenizer",
    "text_states": "clip",
    "text_embeds": "clip",
    "image_embeds": "clip",
    "latents": "autoencoder",
}
CAPTION_INPUTS = frozenset({"input_ids", "text_states", "text_embeds"})  # read the caption
CONDITIONS = CAPTION_INPUTS | {"image_embeds"}  # what makes a model's samples conditional


def needs(reads: frozenset[str]) -> list[str]:
    """The data keys (`tokenizer`, `clip`) naming the models that prepare what `reads` holds."""
    return sorted({PROVIDERS[name] for name in reads if name in PROVIDERS}, reverse=True)


def reads_caption(reads: frozenset[str]) -> bool:
    """Whether a model reads the caption (its tokens, or CLIP's states of them)."""
    return bool(reads & CAPTION_INPUTS)


def samples_are_judged(reads: frozenset[str]) -> bool:
    """Whether a model's samples are images drawn for a batch's own captions or images (so
    the shapes judge can score them against the batch's specs)."""
    return bool(reads & CONDITIONS) and bool(reads & {"image_tokens", "pixel_values", "latents"})


def check_readers(
    config: Any,
    reads: frozenset[str],
    tokenizer: Any = None,
    clip: Any = None,
    autoencoder: Any = None,
) -> None:
    """Raise a ValueError naming the model key whose value differs from its reader's.

    Args:
        config: the reading model's config.
        reads: its declared inputs.
        tokenizer: the image tokenizer preparing `image_tokens` (or None).
        clip: the CLIP preparing the CLIP inputs (or None).
        autoencoder: the KL autoencoder preparing `latents` (or None).
    """
    for key, (want, owner) in reader_values(config, reads, tokenizer, clip, autoencoder).items():
        have = config.get(key)
        if have is not None and _as_list(have) != _as_list(want):
            raise ValueError(f"model.{key}={have} but {owner} has {want}; set model.{key}={want}")


def reader_keys(
    reads: frozenset[str], tokenizer: Any = None, clip: Any = None, autoencoder: Any = None
) -> dict[str, Any]:
    """The model keys the readers fix (codebook size, grid, CLIP widths, latent shape):
    key -> value, for a model reading `reads` (what the recipe fills in)."""
    values = reader_values({}, reads, tokenizer, clip, autoencoder)
    return {key: _plain(want) for key, (want, _) in values.items()}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def reader_values(
    config: Any, reads: frozenset[str], tokenizer: Any, clip: Any, autoencoder: Any
) -> dict[str, tuple[Any, str]]:
    """model key -> (the value its reader fixes, the reader named in errors); only for the
    readers given."""
    checks = []
    if "image_tokens" in reads and tokenizer is not None:
        grid_key = "grid_size" if "grid_size" in config else "grid_sizes"
        owner = f"the tokenizer {type(tokenizer).__name__}"
        grid = tokenizer.grid_size
        checks += [
            ("num_tokens", tokenizer.num_tokens, owner),
            (grid_key, list(grid) if isinstance(grid, tuple) else [grid], owner),
        ]
    if "latents" in reads and autoencoder is not None:
        owner = "the autoencoder at data.autoencoder"
        checks += [
            ("latent_channels", autoencoder.latent_channels, owner),
            ("latent_size", autoencoder.latent_size, owner),
        ]
    if "text_states" in reads and clip is not None:
        checks += [
            ("clip_width", clip.text_width, "the CLIP model at data.clip"),
            ("context_length", clip.config.context_length, "the CLIP model at data.clip"),
        ]
    if reads & {"text_embeds", "image_embeds"} and clip is not None:
        checks.append(("embed_dim", clip.config.embed_dim, "the CLIP model at data.clip"))
    return {key: (want, owner) for key, want, owner in checks}


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class PreparedData:
    """A model's training and validation sets as it reads them.

    Args:
        train_set: the training samples.
        val_set: the held-back samples (sample grids, evaluation).
        batch_transform: applied to each collated batch on the device (CLIP states, ...).
        decode_tokens: code grids or latents -> images, for sample grids of a model over
            a tokenizer's codes or an autoencoder's latents.
    """

    train_set: Dataset
    val_set: Dataset
    batch_transform: Callable[[dict], dict] | None = None
    decode_tokens: Callable[[Any], torch.Tensor] | None = None


def prepare(
    reads: frozenset[str],
    train_set: Dataset,
    val_set: Dataset,
    cache_dir: str,
    tokenizer: Any = None,
    clip: Any = None,
    autoencoder: Any = None,
    sources: dict[str, str] | None = None,
    caption_drop_prob: float = 0.0,
    seed: int = 0,
) -> PreparedData:
    """The data sets and batch transform that give a model what it reads.

    Args:
        reads: the model's declared inputs.
        train_set: the image data set for training.
        val_set: the held-back image data set.
        cache_dir: the folder of cached codes and embeddings.
        tokenizer: the frozen image tokenizer (when `image_tokens` is read).
        clip: the frozen CLIP (when a CLIP input is read).
        autoencoder: the frozen KL autoencoder (when `latents` are read).
        sources: data key -> the path a reader was loaded from (names cache entries).
        caption_drop_prob: the chance a training caption is replaced by the empty one
            before CLIP reads it (classifier-free guidance; the validation set keeps all).
        seed: the run's seed (of the dropped captions' draws).
    """
    sources = sources or {}
    sets = [train_set, val_set]
    transforms = []
    decode = None
    if "image_tokens" in reads:  # codes (and image embeddings beside them), cached
        embedder = clip if "image_embeds" in reads else None
        sets = [token_dataset(tokenizer, s, cache_dir, sources, embedder) for s in sets]
        decode = token_decoder(tokenizer)
    elif "image_embeds" in reads and "pixel_values" not in reads:  # embeddings alone, cached
        sets = [embedding_dataset(clip, s, cache_dir, sources) for s in sets]
    elif "image_embeds" in reads:  # the model reads the pixels too: embed them per batch
        transforms.append(image_embeds_transform(clip))
    if "latents" in reads:  # scaled latents, cached
        sets = [latent_dataset(autoencoder, s, cache_dir, sources) for s in sets]
        decode = autoencoder_decoder(autoencoder)
    if "text_states" in reads:
        transforms.append(clip_text_states(clip, embeds="text_embeds" in reads))
        if caption_drop_prob:
            sets[0] = CaptionDropped(sets[0], caption_drop_prob, seed)
    return PreparedData(*sets, batch_transform=_compose(transforms), decode_tokens=decode)


def _compose(transforms: list[Callable[[dict], dict]]) -> Callable[[dict], dict] | None:
    """One batch transform applying each in turn (None when there are none)."""
    if not transforms:
        return None
    if len(transforms) == 1:
        return transforms[0]

    def transform(batch: dict) -> dict:
        for t in transforms:
            batch = t(batch)
        return batch

    return transform


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def token_dataset(
    tokenizer: Any, dataset: Any, cache_dir: str, sources: dict[str, str], clip: Any = None
) -> TokenDataset:
    """A data set's code grids under `tokenizer`, from the cache (encoded on a miss); with
    `clip`, each image's CLIP embedding (`image_embeds`) beside them."""
    weights = list(tokenizer.state_dict().items())
    described = [model_description(tokenizer), dataset.description]
    source = f"{sources.get('tokenizer')} {dataset.description}"
    extras = None
    if clip is not None:
        weights += [(f"clip.{k}", v) for k, v in clip.state_dict().items()]
        described.append(model_description(clip))
        source += f" + {sources.get('clip')}"
        extras = {"image_embeds": clip_image_embeds(clip)}

    def build():
        for model in (tokenizer, clip):
            if model is not None:
                model.to(_device())
        return encode_dataset(dataset, tokenizer.encode, device=_device(), extras=extras)

    key = fingerprint(weights, *described)
    return TokenDataset(cached_tokens(cache_dir, key, source, build))


def embedding_dataset(
    clip: Any, dataset: Any, cache_dir: str, sources: dict[str, str]
) -> TokenDataset:
    """A data set's CLIP image embeddings (`image_embeds`) beside its captions, from the cache
    (encoded on a miss), so a model that reads no image never runs CLIP's image tower."""
    key = fingerprint(
        clip.state_dict().items(), model_description(clip), dataset.description, "embeds"
    )
    source = f"{sources.get('clip')} {dataset.description} embeddings"
    extras = {"image_embeds": clip_image_embeds(clip)}

    def build():
        clip.to(_device())
        return encode_dataset(dataset, None, device=_device(), extras=extras)

    return TokenDataset(cached_tokens(cache_dir, key, source, build))


class CaptionDropped(Dataset):
    """A training set whose samples lose their caption (it becomes "", the unconditional
    caption of classifier-free guidance) with probability `p`, drawn anew each epoch: the
    draw is a function of (`seed`, epoch, sample index) alone, so it is the same whichever
    process or DataLoader worker reads the sample, in whatever order (two processes drop
    what one process drops, and a resumed run what the run it resumes would have).

    Args:
        dataset: samples with a `caption`.
        p: the chance a sample's caption is dropped, in [0, 1).
        seed: the run's seed.
    """

    def __init__(self, dataset: Dataset, p: float, seed: int = 0) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"caption_drop_prob={p} must be in [0, 1)")
        self.dataset = dataset
        self.p = p
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch being read (the trainer sets it as each starts)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if random.Random(f"{self.seed}/{self.epoch}/{index}").random() < self.p:
            sample = {**sample, "caption": ""}
        return sample


def clip_text_states(clip: Any, embeds: bool = False) -> Callable[[dict], dict]:
    """A batch transform adding the frozen CLIP token states (`text_states`) of `input_ids`,
    and with `embeds` their pooled text embeddings (`text_embeds`) from the same pass; each
    distinct caption's are computed once (`CaptionFeatures`)."""
    return CaptionFeatures(clip, embeds)


class CaptionFeatures:
    """Frozen CLIP text features per caption, computed once: a data set's captions come back
    every epoch, and a caption seen before costs a lookup instead of a text-tower pass (most
    of a small denoiser's step with a pretrained tower). Up to `max_bytes` are kept; past
    that, new captions are computed every time.

    Args:
        clip: the frozen CLIP (`text_features`).
        embeds: add `text_embeds` too.
        max_bytes: the most memory the kept features take.
    """

    def __init__(self, clip: Any, embeds: bool = False, max_bytes: int = 4 << 30) -> None:
        self.clip, self.embeds, self.max_bytes = clip, embeds, max_bytes
        self.kept: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self.bytes = 0

    def __call__(self, batch: dict) -> dict:
        ids = batch["input_ids"]
        self.clip.to(ids.device)
        keys = [row.numpy().tobytes() for row in ids.cpu()]
        new = [i for i, key in enumerate(keys) if key not in self.kept]
        features = {}
        if new:
            found = self.clip.text_features(ids[new])
            for j, i in enumerate(new):
                features[keys[i]] = (found.states[j], found.embeds[j])
            self._keep(features)
        rows = [self.kept.get(key) or features[key] for key in keys]
        out = {**batch, "text_states": torch.stack([states for states, _ in rows])}
        if self.embeds:
            out["text_embeds"] = torch.stack([embeds for _, embeds in rows])
        return out

    def _keep(self, features: dict[bytes, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep new captions' features while there is room."""
        for key, (states, embeds) in features.items():
            size = (states.numel() + embeds.numel()) * states.element_size()
            if self.bytes + size > self.max_bytes:
                return
            self.kept[key] = (states.detach().clone(), embeds.detach().clone())
            self.bytes += size


def clip_image_embeds(clip: Any) -> Callable[[dict], torch.Tensor]:
    """batch -> the frozen CLIP image embeddings of its `pixel_values` (on their device)."""

    def embed(batch: dict) -> torch.Tensor:
        clip.to(batch["pixel_values"].device)
        return clip.encode_image(batch["pixel_values"])

    return embed


def image_embeds_transform(clip: Any) -> Callable[[dict], dict]:
    """A batch transform adding the CLIP image embeddings of its pixels (`image_embeds`)."""
    embed = clip_image_embeds(clip)

    def transform(batch: dict) -> dict:
        return {**batch, "image_embeds": embed(batch)}

    return transform


def latent_dataset(
    autoencoder: Any, dataset: Any, cache_dir: str, sources: dict[str, str]
) -> TokenDataset:
    """A data set's scaled autoencoder latents (`latents`) beside its captions, from the cache
    (encoded on a miss; a changed autoencoder is a new key)."""
    key = fingerprint(
        autoencoder.state_dict().items(),
        model_description(autoencoder),
        dataset.description,
        "latents",
    )
    source = f"{sources.get('autoencoder')} {dataset.description} latents"
    extras = {"latents": lambda batch: autoencoder.encode(batch["pixel_values"])}

    def build():
        autoencoder.to(_device())
        return encode_dataset(dataset, None, device=_device(), extras=extras)

    return TokenDataset(cached_tokens(cache_dir, key, source, build))


def autoencoder_decoder(autoencoder: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Latents (on any device) -> images, for the trainer's sample grids."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return autoencoder.to(latents.device).decode(latents)

    return decode


def token_decoder(tokenizer: Any) -> Callable[[Any], torch.Tensor]:
    """Code grids (on any device) -> images, for the trainer's sample grids."""

    def decode(tokens: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        device = (tokens[0] if isinstance(tokens, tuple) else tokens).device
        return tokenizer.to(device).decode(tokens)

    return decode
