"""CLIP through open_clip: a text and image encoder trained contrastively on our captions, used
to condition the priors, to score images against prompts and to rerank samples.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision":
two encoders map an image and a caption into one embedding space, trained with the
symmetric InfoNCE loss over the batch, logits scaled by a learnable temperature (open_clip's
`ClipLoss`, logit scale initialised to log(1 / 0.07)).

`CLIPModel` keeps its architecture as data: either t2i's own small shape (embedding, widths,
layers, heads, patch size, image size, context length), built with open_clip's `CLIP`, or an
open_clip architecture name (`list_models()`), whose weights a user may have as a local file
(`CLIPModel.from_open_clip("ViT-B-32", pretrained="/path/to/file")`). Either way it saves and
loads as a t2i model directory. It owns its tokenizer (open_clip's); a prompt longer than the
context is cut with a warning that says what was lost, and an empty prompt is an error.

Its text tower may instead be a pretrained Hugging Face text model from a local folder
(`text_model`: a BERT, MiniLM, sentence-transformers, `CLIPTextModel` or T5 encoder folder;
`HFTextTower`: mean pooling, a linear projection), locked with `lock_text` as in LiT (Zhai
et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning", here with the text
side locked): only the image tower, the text projection and the temperature train, so the
priors and the denoiser read English the captions never taught them. Such a CLIP saves its
text tower in a `text_model/` subfolder of its own (transformers' layout, with its
tokenizer), apart from the rest of its weights: a locked tower is written byte for byte the
same by every build.

It also records which tokens its training captions held (`seen_tokens` in its config, kept
as it trains and written when it saves), so that a prompt of words it never saw ("a photo
of a dog" to a model of coloured shapes, or another language) gets a warning naming them
instead of drawing noise without a word.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import transformers
from diffusers.configuration_utils import register_to_config
from open_clip.loss import ClipLoss
from open_clip.transform import PreprocessCfg
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.models.lora import LoraError, has_lora
from t2i.nn.text import VOCAB_SIZE

logger = logging.getLogger(__name__)

T5_TYPES = ("t5", "mt5", "umt5")  # encoder-decoders whose encoder is the text tower
TEXT_FOLDER = "text_model"  # in a saved CLIP: its Hugging Face text tower and tokenizer
HF_LORA_TARGETS = (  # a Hugging Face text tower's projections (BERT, CLIPTextModel, T5)
    "query", "key", "value", "dense", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2",
    "q", "k", "v", "o", "wi", "wo",
)  # fmt: skip
TOKENIZER_FILES = (  # what a Hugging Face text folder's tokenizer is read from
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "spiece.model",
)


class HFTextTower(torch.nn.Module):
    """A Hugging Face text encoder as CLIP's text tower: its last hidden states, their mean
    over the caption's real tokens, a linear projection to the shared space (the layout of
    open_clip's `HFTextEncoder` with mean pooling, whose weights' names it keeps, for every
    encoder transformers builds: BERT and MiniLM, `CLIPTextModel`, T5's encoder).

    Args:
        folder: the model's folder (config.json; the weights are read by `load_pretrained_parts`).
        output_dim: the shared embedding's size.
    """

    def __init__(self, folder: str | Path, output_dim: int) -> None:
        super().__init__()
        self.config = transformers.AutoConfig.from_pretrained(str(folder))
        if self.config.model_type in T5_TYPES:  # an encoder-decoder: its encoder alone
            self.transformer = transformers.T5EncoderModel(self.config)
        else:
            cls = transformers.AutoModel._model_mapping[type(self.config)]
            pooling = "add_pooling_layer" in inspect.signature(cls.__init__).parameters
            extra = {"add_pooling_layer": False} if pooling else {}  # mean pooling, not BERT's
            self.transformer = transformers.AutoModel.from_config(self.config, **extra)
        self.proj = torch.nn.Linear(self.config.hidden_size, output_dim, bias=False)
        self.context_length = int(getattr(self.config, "max_position_embeddings", 512))
        self.vocab_size = int(self.config.vocab_size)

    def encode(self, input_ids: Tensor, pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
        """(projected mean-pooled embeddings (B, output_dim), token states (B, L, width),
        real-token mask (B, L)) of token ids (B, L). The transformer runs on the longest
        caption's tokens only (padding is masked out of attention, so a real token's state is
        the same); padded positions' states are zeros, so a caption's states do not depend on
        the batch it comes in."""
        mask = input_ids != pad_token_id  # (B, L)
        n = max(int(mask.sum(1).max()), 1)  # run the longest caption's tokens, not the padding
        out = self.transformer(input_ids=input_ids[:, :n], attention_mask=mask[:, :n].long())
        states = out.last_hidden_state * mask[:, :n, None]  # padding: zeros, as if not run
        pooled = states.sum(1) / mask[:, :n].sum(1, keepdim=True).clamp(min=1)  # masked mean
        states = F.pad(states, (0, 0, 0, input_ids.shape[1] - n))  # (B, L, W)
        return self.proj(pooled), states, mask

    def forward(self, input_ids: Tensor) -> Tensor:
        """The projected embeddings (open_clip's `encode_text` calls this), padding read as
        the config's `pad_token_id`."""
        return self.encode(input_ids, int(getattr(self.config, "pad_token_id", None) or 0))[0]


class HFTextCLIP(open_clip.model.CustomTextCLIP):
    """open_clip's CLIP with a custom text tower, its text tower an `HFTextTower` (open_clip's
    own builder makes BERT-family towers only)."""

    def __init__(self, embed_dim: int, vision_cfg: Any, text: HFTextTower) -> None:
        torch.nn.Module.__init__(self)
        self.output_dict = False
        self.visual = open_clip.model._build_vision_tower(embed_dim, vision_cfg)
        self.text = text
        self.context_length, self.vocab_size = text.context_length, text.vocab_size
        self.logit_scale = torch.nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.logit_bias = None


@dataclass
class TextFeatures:
    """What the text encoder gives for a batch of token ids.

    Args:
        embeds: pooled, projected, unit-norm caption embeddings, (B, embed_dim).
        states: the final-layer hidden state of every token, (B, L, text_width).
        mask: True where a token is real (not padding), (B, L).
    """

    embeds: Tensor
    states: Tensor
    mask: Tensor


class CLIPModel(T2IModel):
    """An open_clip CLIP model with its tokenizer and its image normalisation.

    Args:
        embed_dim: size of the shared embedding space.
        image_size: side of the (square) images the vision tower reads.
        patch_size: ViT patch side.
        vision_width: ViT width.
        vision_layers: ViT layers.
        vision_heads: ViT attention heads (the width over this is the head width).
        text_width: text transformer width.
        text_layers: text transformer layers.
        text_heads: text transformer attention heads.
        context_length: caption length in tokens, start and end tokens included.
        vocab_size: BPE vocabulary (open_clip's).
        architecture: an open_clip model name; when set, it replaces all the shape arguments
            above (the image size and context length come from it).
        image_mean: per-channel mean the vision tower expects of images on [0, 1].
        image_std: per-channel std the vision tower expects of images on [0, 1].
        seen_tokens: the token ids of its training captions (None: not known, as for
            external weights); recorded by training, not set by hand.
        text_model: a local Hugging Face text model folder (config.json, weights, tokenizer)
            whose model is the text tower, mean-pooled and projected linearly; it replaces
            the text shape arguments above. `build_model` reads its weights
            (`load_pretrained_parts`); a saved CLIP carries it in its own subfolder.
        lock_text: freeze that text tower (LiT): its weights never train, dropout off.
    """

    READS = frozenset({"pixel_values", "input_ids", "negative_input_ids"})  # + hard negatives

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 128,
        image_size: int = 32,
        patch_size: int = 4,
        vision_width: int = 128,
        vision_layers: int = 4,
        vision_heads: int = 4,
        text_width: int = 128,
        text_layers: int = 4,
        text_heads: int = 4,
        context_length: int = 32,
        vocab_size: int = VOCAB_SIZE,
        architecture: str | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        seen_tokens: Sequence[int] | None = None,
        text_model: str | None = None,
        lock_text: bool = False,
    ) -> None:
        super().__init__()
        if lock_text and text_model is None:
            raise ValueError("lock_text=True locks a pretrained text tower: set text_model too")
        vision_cfg = open_clip.model.CLIPVisionCfg(
            layers=vision_layers,
            width=vision_width,
            head_width=vision_width // vision_heads,
            patch_size=patch_size,
            image_size=image_size,
        )
        if architecture is not None:
            self.model = _build_open_clip(architecture)
        elif text_model is not None:  # a Hugging Face text tower (weights: load_pretrained_parts)
            _check_text_folder(text_model)
            self.model = HFTextCLIP(embed_dim, vision_cfg, HFTextTower(text_model, embed_dim))
        else:
            text_cfg = open_clip.model.CLIPTextCfg(
                context_length=context_length,
                vocab_size=vocab_size,
                width=text_width,
                heads=text_heads,
                layers=text_layers,
            )
            self.model = open_clip.model.CLIP(embed_dim, vision_cfg, text_cfg)
        if lock_text:
            self.text_tower.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        seen = torch.zeros(getattr(self.model, "vocab_size", vocab_size), dtype=torch.bool)
        if seen_tokens is not None:
            seen[torch.as_tensor(list(seen_tokens), dtype=torch.long)] = True
        self.register_buffer("seen", seen, persistent=False)  # updated as it trains

    @classmethod
    def from_open_clip(cls, architecture: str, pretrained: str | None = None) -> CLIPModel:
        """An open_clip architecture, with weights from a local file when given.

        Args:
            architecture: an open_clip model name, e.g. "ViT-B-32".
            pretrained: a local checkpoint file (safetensors, or a weights-only torch file)
                of that architecture; None gives random weights. Nothing is downloaded.
        """
        cfg = _open_clip_config(architecture)
        preprocess = {**dataclasses.asdict(PreprocessCfg()), **cfg.get("preprocess_cfg", {})}
        model = cls(
            architecture=architecture,
            image_size=_side(cfg["vision_cfg"].get("image_size", 224)),
            context_length=cfg.get("text_cfg", {}).get("context_length", 77),
            image_mean=tuple(preprocess["mean"]),
            image_std=tuple(preprocess["std"]),
        )
        if pretrained is not None:
            open_clip.load_checkpoint(model.model, pretrained)
        return model

    # ---- a pretrained text tower -------------------------------------------------------------

    @property
    def text_tower(self) -> torch.nn.Module | None:
        """The Hugging Face text model of `text_model` (None for open_clip's own towers)."""
        text = getattr(self.model, "text", None)
        return getattr(text, "transformer", None) if self.config.text_model else None

    @property
    def text_width(self) -> int:
        """Width of the per-token text states (`text_features(...).states`)."""
        if self.text_tower is not None:
            return int(self.text_tower.config.hidden_size)
        return int(self.model.transformer.width)

    def lora_defaults(self) -> tuple[str, tuple[str, ...]]:
        """LoRA goes in the text tower: a Hugging Face one's attention and MLP projections
        (BERT's, CLIP's or T5's names, those it has), open_clip's own tower's MLP (its
        attention runs nn.MultiheadAttention, whose output projection is not called as a
        layer, so an adapter there would never act)."""
        if self.config.architecture is None and self.text_tower is None:
            return "model.transformer", ("mlp.c_fc", "mlp.c_proj")
        if self.text_tower is None:
            raise LoraError(
                f"a CLIP of architecture {self.config.architecture!r} takes no adapters"
            )
        scope = "model.text.transformer"
        have = {
            n.rsplit(".", 1)[-1]
            for n, m in self.text_tower.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
        return scope, tuple(n for n in HF_LORA_TARGETS if n in have)

    def load_pretrained_parts(self) -> None:
        """Read the weights of the pretrained parts the config names (the `text_model`
        folder's text model) into a newly built model; nothing for a CLIP without one.

        Raises:
            ValueError: the folder's weights do not fit its config's architecture.
        """
        if self.text_tower is not None:
            _load_text_weights(self.text_tower, Path(self.config.text_model))

    def train(self, mode: bool = True) -> CLIPModel:
        """nn.Module.train, leaving a locked text tower in eval mode (no dropout)."""
        super().train(mode)
        if self.config.lock_text and self.text_tower is not None:
            self.text_tower.eval()
        return self

    # ---- text ------------------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> Any:
        """The text tower's tokenizer at the context length: open_clip's BPE, an open_clip
        architecture's, or the Hugging Face folder's."""
        name = self.config.architecture
        length = self.config.context_length
        if self.config.text_model is not None:
            return open_clip.tokenizer.HFTokenizer(self.config.text_model, context_length=length)
        if name is None:
            return open_clip.tokenizer.SimpleTokenizer(context_length=length)
        return open_clip.get_tokenizer(name, context_length=length)

    @property
    def pad_token_id(self) -> int:
        """The id padding a caption to the context length (0 for open_clip's BPE)."""
        inner = getattr(self.tokenizer, "tokenizer", None)  # a Hugging Face tokenizer
        return int(getattr(inner, "pad_token_id", None) or 0)

    def tokenize(
        self, texts: str | Sequence[str], allow_empty: bool = False, warn: bool = True
    ) -> Tensor:
        """Token ids (B, context_length) for prompts; warns about what truncation cuts off
        and about words no training caption held.

        Args:
            texts: one prompt or a list of prompts.
            allow_empty: accept "" (the unconditional caption of classifier-free guidance).
            warn: log those warnings (off where the prompts were warned of already, or are
                scored rather than drawn).

        Raises:
            ValueError: for an empty (or blank) prompt, unless `allow_empty`.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(texts):
            if not allow_empty and (not text or not text.strip()):
                raise ValueError(f"prompt {i} is empty; give a caption to condition on")
        ids = self.tokenizer(texts)
        if not warn:
            return ids
        self._warn_truncated(texts)
        for text in dict.fromkeys(texts):
            unknown = self.unknown_words(text)
            if unknown:
                logger.warning(
                    "prompt %s: words no training caption of this model held: %s; it "
                    "cannot draw what it never saw",
                    _short(text),
                    ", ".join(repr(w) for w in unknown[:6]) + (" ..." if len(unknown) > 6 else ""),
                )
        return ids

    def unknown_words(self, text: str) -> list[str]:
        """The words of a prompt with a token no training caption held (none when the model
        records no training captions, as for external weights)."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None or not bool(self.seen.any()):
            return []
        seen = self.seen.cpu()
        pattern = getattr(self.tokenizer, "pat", None)
        words = pattern.findall(text.lower()) if pattern is not None else text.lower().split()
        return [
            word
            for word in dict.fromkeys(w.strip() for w in words)
            if any(c.isalnum() for c in word)
            and any(not seen[t] for t in encode(word) if t < len(seen))
        ]

    def _warn_truncated(self, texts: list[str]) -> None:
        """Warn, with the start of what was lost, about each prompt longer than the context."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return
        keep = self.config.context_length - 2  # start and end tokens
        for text in texts:
            tokens = encode(text)
            if len(tokens) > keep:
                lost = self.tokenizer.decode(tokens[keep:]).strip()
                logger.warning(
                    "prompt %s is %d tokens, longer than the context of %d; cut off: %s",
                    _short(text),
                    len(tokens) + 2,
                    self.config.context_length,
                    _short(lost),
                )

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """diffusers' save, with the tokens its training captions held in its config; a
        Hugging Face text tower goes apart, into SAVE_DIRECTORY/text_model (transformers'
        layout and its tokenizer files), so that an unchanged tower is saved byte for byte
        the same."""
        if has_lora(self):  # its adapters alone
            super().save_pretrained(save_directory, *args, **kwargs)
            return
        seen = self.seen.nonzero().flatten().tolist()
        if seen:
            self.register_to_config(seen_tokens=seen)
        tower = self.text_tower
        if tower is None:
            super().save_pretrained(save_directory, *args, **kwargs)
            return
        folder = Path(save_directory) / TEXT_FOLDER
        source = Path(self.config.text_model)
        with _no_progress_bars():
            tower.save_pretrained(folder)
        if source.resolve() != folder.resolve():
            for name in TOKENIZER_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, folder / name)
        self.register_to_config(text_model=TEXT_FOLDER)  # relative to the saved CLIP
        try:
            with _detached(self.model.text, "transformer"):
                super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.register_to_config(text_model=str(source))

    @classmethod
    def from_pretrained(cls, path: Any, *args: Any, **kwargs: Any) -> CLIPModel:
        """diffusers' load; a CLIP saved with a Hugging Face text tower reads it from its
        text_model subfolder (and needs nothing of the folder it was first read from)."""
        config = cls.load_config(path)
        if config.get("text_model") != TEXT_FOLDER:
            return super().from_pretrained(path, *args, **kwargs)
        folder = Path(path) / TEXT_FOLDER
        kwargs = {**kwargs, "text_model": str(folder), "low_cpu_mem_usage": False}
        with _quiet_missing_keys():  # the tower's, read below
            model = super().from_pretrained(path, *args, **kwargs)
        _load_text_weights(model.text_tower, folder)  # locked by the constructor, if locked
        if kwargs.get("torch_dtype") is not None:
            model.text_tower.to(kwargs["torch_dtype"])
        return model

    def text_features(self, input_ids: Tensor) -> TextFeatures:
        """Pooled unit-norm embeddings and per-token states of token ids (B, context_length).

        Args:
            input_ids: from `tokenize`.
        """
        m = self.model
        if self.text_tower is not None:
            return self._hf_text_features(input_ids)
        if not hasattr(m, "token_embedding"):
            raise NotImplementedError(
                f"{self.config.architecture}: per-token states need open_clip's own text tower"
            )
        x = m.token_embedding(input_ids) + m.positional_embedding  # (B, L, W)
        states = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))  # (B, L, W)
        pooled = open_clip.transformer.text_global_pool(
            states, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None)
        )  # (B, W)
        proj = m.text_projection
        embeds = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
        return TextFeatures(F.normalize(embeds, dim=-1), states, input_ids != 0)

    def _hf_text_features(self, input_ids: Tensor) -> TextFeatures:
        """text_features through a Hugging Face text tower (`HFTextTower.encode`), padding
        read as its tokenizer pads."""
        embeds, states, mask = self.model.text.encode(input_ids, self.pad_token_id)
        return TextFeatures(F.normalize(embeds, dim=-1), states, mask)

    def encode_text(self, input_ids: Tensor) -> Tensor:
        """Unit-norm caption embeddings, (B, embed_dim).

        Args:
            input_ids: from `tokenize`.
        """
        if self.text_tower is not None:
            return self._hf_text_features(input_ids).embeds
        return self.model.encode_text(input_ids, normalize=True)

    # ---- images ----------------------------------------------------------------------------

    def preprocess(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        """Images as the vision tower reads them: resized and normalised, (N, 3, S, S).

        Args:
            images: a (N, 3, H, W) tensor on [-1, 1], or PIL images.
        """
        if not torch.is_tensor(images):
            arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        x = (images.to(self.device, self.dtype) + 1.0) / 2.0  # [0, 1]
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
        return (x - self.mean) / self.std

    def encode_image(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        """Unit-norm image embeddings, (N, embed_dim).

        Args:
            images: a (N, 3, H, W) tensor on [-1, 1], or PIL images.
        """
        return self.model.encode_image(self.preprocess(images), normalize=True)

    # ---- training --------------------------------------------------------------------------

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """open_clip's contrastive loss over the batch (all processes' batches when several),
        plus, when the batch carries hard negatives, NegCLIP's term for them.

        Args:
            batch: `pixel_values` (B, 3, H, W) on [-1, 1] and `input_ids` (B, context_length);
                optionally `negative_input_ids` (B, context_length) and `negative_mask` (B,)
                from `CaptionCollator(hard_negatives=...)`: a caption false of each image that
                differs from its own only in, say, the relation.

        Returns:
            "loss", "logit_scale" (the learned inverse temperature), and "accuracy" (share of
            images whose own caption scores highest in the batch); with hard negatives also
            "hard_negative_loss" (each image's cross-entropy between its caption and its hard
            negative, averaged over the rows that have one, added to the loss) and
            "hard_negative_accuracy" (share of those images scoring their caption higher).
        """
        images = self.encode_image(batch["pixel_values"])
        hard = "negative_input_ids" in batch
        ids = batch["input_ids"]
        self.seen[ids.unique()] = True  # the words it learns
        if hard:  # one text pass for the captions and their negatives
            ids = torch.cat([ids, batch["negative_input_ids"]])
        texts = self.encode_text(ids)
        if hard:
            texts, negatives = texts.split(len(images))
        scale = self.model.logit_scale.exp()
        rank, world = _distributed()
        loss = ClipLoss(gather_with_grad=True, rank=rank, world_size=world)(images, texts, scale)
        hits = (images @ texts.t()).argmax(1) == torch.arange(len(images), device=images.device)
        out = {"loss": loss, "logit_scale": scale.detach(), "accuracy": hits.float().mean()}
        if hard:
            mask = batch["negative_mask"].to(images.device).float()  # (B,)
            own, swapped = (images * texts).sum(1), (images * negatives).sum(1)
            terms = F.softplus(scale * (swapped - own))  # the two-way cross-entropy, (B,)
            rows = mask.sum().clamp(min=1.0)
            term = (terms * mask).sum() / rows
            right = ((own > swapped).float() * mask).sum() / rows
            out.update(
                loss=loss + term, hard_negative_loss=term.detach(), hard_negative_accuracy=right
            )
        return out


def _open_clip_config(architecture: str) -> dict:
    """A copy of an open_clip architecture's config, or an error naming it."""
    cfg = open_clip.get_model_config(architecture)
    if cfg is None:
        raise ValueError(
            f"architecture={architecture!r} is not an open_clip model; see open_clip.list_models()"
        )
    return copy.deepcopy(cfg)


def _build_open_clip(architecture: str) -> torch.nn.Module:
    """An open_clip architecture with random weights, built without downloading anything
    (and without `create_model`, which moves the model and so fails on diffusers' meta
    device while `from_pretrained` builds it)."""
    cfg = _open_clip_config(architecture)
    if "multimodal_cfg" in cfg:
        raise ValueError(f"architecture={architecture!r} is a CoCa model; t2i takes CLIP models")
    text_cfg, vision_cfg = cfg.setdefault("text_cfg", {}), cfg.setdefault("vision_cfg", {})
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    cfg.pop("preprocess_cfg", None)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    return (open_clip.model.CustomTextCLIP if custom else open_clip.model.CLIP)(**cfg)


def _check_text_folder(path: str) -> None:
    """A ValueError naming `text_model` unless it is a folder with a config.json."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        what = "no such folder" if not folder.is_dir() else "no config.json in it"
        raise ValueError(f"text_model={path!r}: {what}; give a Hugging Face text model folder")


def _load_text_weights(tower: torch.nn.Module, folder: Path) -> None:
    """A Hugging Face text model folder's safetensors weights into `tower`: keys with or
    without the model's prefix ("bert."); a pooler the mean pooling does not use is left out;
    no weights, or any weight the tower needs and the folder lacks or holds in another shape,
    is a ValueError naming the folder."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"text_model={str(folder)!r}: no .safetensors weights in it")
    weights = {k: v for f in files for k, v in load_file(f).items()}
    prefix = f"{getattr(tower, 'base_model_prefix', '')}."
    if prefix != "." and not any(k in tower.state_dict() for k in weights):
        weights = {k.removeprefix(prefix): v for k, v in weights.items()}
    expected = tower.state_dict()
    for key, value in weights.items():
        if key in expected and value.shape != expected[key].shape:
            raise ValueError(
                f"text_model={str(folder)!r}: {key} is {tuple(value.shape)} in its weights but "
                f"{tuple(expected[key].shape)} in its config.json"
            )
    missing, _ = tower.load_state_dict(weights, strict=False)  # extra: an unused pooler
    params = dict(tower.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in params if k not in missing}
    tied = {k for k in missing if k in params and id(params[k]) in loaded}  # T5's embeddings
    missing = [k for k in missing if not k.endswith("position_ids") and k not in tied]
    if missing:
        raise ValueError(f"text_model={str(folder)!r}: its weights lack {missing[0]}")


@contextlib.contextmanager
def _detached(parent: torch.nn.Module, name: str) -> Iterator[None]:
    """`parent.name` taken out of the module tree for the block (its weights unsaved)."""
    child = parent._modules.pop(name)
    try:
        yield
    finally:
        parent._modules[name] = child


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off for the block (one per saved file otherwise)."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_missing_keys() -> Iterator[None]:
    """diffusers' warning about weights missing from a checkpoint, silenced for the block."""
    log = logging.getLogger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _side(size: int | Sequence[int]) -> int:
    return size if isinstance(size, int) else int(size[0])


def _distributed() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) when it is not running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def clip_score(
    clip: CLIPModel,
    images: Tensor | Sequence[Image.Image],
    texts: str | Sequence[str],
    warn: bool = True,
) -> Tensor:
    """Cosine similarities of images and texts, (num_images, num_texts).

    Args:
        clip: a CLIP model.
        images: a (N, 3, H, W) tensor on [-1, 1], or PIL images.
        texts: one prompt or a list of prompts.
        warn: warn of over-long prompts and unseen words (`CLIPModel.tokenize`).
    """
    image_embeds = clip.encode_image(images).float()
    text_embeds = clip.encode_text(clip.tokenize(texts, warn=warn).to(clip.device)).float()
    return image_embeds @ text_embeds.t()


@torch.no_grad()
def rerank(
    clip: CLIPModel, images: Tensor | Sequence[Image.Image], text: str, k: int
) -> Tensor | list[Image.Image]:
    """The k images that match a prompt best, best first (`clip_score` gives the scores).

    Args:
        clip: a CLIP model.
        images: candidates, a (N, 3, H, W) tensor on [-1, 1] or PIL images.
        text: the prompt.
        k: how many to keep (at most N).

    Returns:
        the kept images, of the type given: a (k, 3, H, W) tensor or a list of PIL images.
    """
    order = clip_score(clip, images, text)[:, 0].topk(min(k, len(images))).indices
    if torch.is_tensor(images):
        return images[order.to(images.device)]
    return [images[i] for i in order.tolist()]


def _short(text: str, width: int = 60) -> str:
    """A prompt quoted for a one-line message, cut to about `width` characters."""
    one = " ".join(text.split())
    return repr(one if len(one) <= width else one[: width - 3] + "...")
