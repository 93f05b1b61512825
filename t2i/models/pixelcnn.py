"""A gated PixelCNN prior over code grids, and the two-level prior of VQ-VAE-2.

- van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders": a
  vertical stack (the rows above) and a horizontal stack (the pixels to the left) of masked
  convolutions, which together leave no blind spot; gated activations
  y = tanh(W_f * x + V_f h) . sigmoid(W_g * x + V_g h) (eq. 4), with h a conditioning vector
  or, as here too, a conditioning map (eq. 5).
- Razavi, van den Oord & Vinyals 2019 (VQ-VAE-2): a prior over the top codes and a prior over
  the bottom codes conditioned on the top codes.

The masks are realised by padding and shifting rather than by zeroed weights: the vertical
stack's kernel covers the rows up to the current one and reaches the horizontal stack only
shifted one row down; the first layer's horizontal output is shifted one column right, so
no position sees itself. The model reads `image_tokens` from the batch (grids from a
tokenizer, see `t2i.data.tokens`) and, when conditioned, `class_labels` or `input_ids`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from t2i.models.base import T2IModel
from t2i.nn import CaptionEncoder
from t2i.nn.sampling import sample_logits
from t2i.nn.text import VOCAB_SIZE


def _gate(x: Tensor) -> Tensor:
    """tanh(first half) * sigmoid(second half) over channels: (N, 2C, ...) -> (N, C, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedMaskedConv(nn.Module):
    """One gated layer of both stacks.

    Args:
        channels: width C of both stacks.
        kernel_size: odd kernel side k.
        first: the first layer (mask "A"): the horizontal stack excludes the current position
            and has no residual connection.
        conditioned: add a conditioning map (N, C, 1 or H, 1 or W) to both stacks' gates.
    """

    def __init__(self, channels: int, kernel_size: int, first: bool, conditioned: bool) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd")
        self.pad, self.first = kernel_size // 2, first
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.pad + 1, kernel_size))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.pad + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond_v = nn.Conv2d(channels, 2 * channels, 1, bias=False) if conditioned else None
        self.cond_h = nn.Conv2d(channels, 2 * channels, 1, bias=False) if conditioned else None

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.pad
        v_pre = self.vertical(F.pad(v, (p, p, p, 0)))  # (N, 2C, H, W): rows i-p..i
        h_pre = self.horizontal(F.pad(h, (p, 0, 0, 0)))  # (N, 2C, H, W): columns j-p..j
        if self.first:
            h_pre = F.pad(h_pre, (1, 0))[..., :-1]  # columns j-p-1..j-1
        if self.cond_v is not None:  # cond: (N, C, 1 or H, 1 or W)
            v_pre = v_pre + self.cond_v(cond)
            h_pre = h_pre + self.cond_h(cond)
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])  # rows above only
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), h_new if self.first else h + h_new


class PixelCNN(T2IModel):
    """A gated PixelCNN over an (h, w) grid of codes, optionally conditioned.

    Args:
        num_tokens: codebook size of the tokenizer whose grids it models.
        grid_size: side of the code grid.
        channels: width of the stacks.
        num_layers: gated layers.
        kernel_size: odd kernel side of the masked convolutions.
        num_classes: > 0 conditions on `class_labels` (N,) in [0, num_classes).
        text_width: > 0 conditions on captions (`input_ids`) through a small caption encoder
            of this width.
        text_layers: Transformer layers of that caption encoder.
        vocab_size: caption token vocabulary (open_clip's BPE).
        context_length: longest caption in tokens.
        cond_num_tokens: > 0 conditions on another code grid (VQ-VAE-2's top codes) with this
            many codes, upsampled to this grid.
    """

    @property
    def reads(self) -> frozenset[str]:
        """The codes, and the class labels and captions it is conditioned on."""
        return _condition_reads(self.config)

    @register_to_config
    def __init__(
        self,
        num_tokens: int = 512,
        grid_size: int = 8,
        channels: int = 128,
        num_layers: int = 8,
        kernel_size: int = 5,
        num_classes: int = 0,
        text_width: int = 0,
        text_layers: int = 2,
        vocab_size: int = VOCAB_SIZE,
        context_length: int = 32,
        cond_num_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_tokens, channels)
        conditioned = bool(num_classes or text_width or cond_num_tokens)
        self.layers = nn.ModuleList(
            GatedMaskedConv(channels, kernel_size, first=i == 0, conditioned=conditioned)
            for i in range(num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, num_tokens, 1),
        )
        self.class_embed = nn.Embedding(num_classes, channels) if num_classes else None
        self.text_encoder = (
            CaptionEncoder(vocab_size, context_length, text_width, text_layers)
            if text_width
            else None
        )
        self.text_proj = nn.Linear(text_width, channels) if text_width else None
        self.cond_embed = nn.Embedding(cond_num_tokens, channels) if cond_num_tokens else None
        self.cond_net = (
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(channels, channels, 3, padding=1),
            )
            if cond_num_tokens
            else None
        )

    def condition(
        self,
        class_labels: Tensor | None = None,
        input_ids: Tensor | None = None,
        cond_tokens: Tensor | None = None,
    ) -> Tensor | None:
        """The summed conditioning map (N, C, 1 or h, 1 or w), or None if unconditional.

        Args:
            class_labels: (N,) class ids, when num_classes > 0.
            input_ids: (N, L) caption tokens, when text_width > 0.
            cond_tokens: (N, h', w') codes of the conditioning grid, when cond_num_tokens > 0.
        """
        parts = []
        if self.class_embed is not None:
            parts.append(self.class_embed(_required(class_labels, "class_labels"))[..., None, None])
        if self.text_encoder is not None:
            text = self.text_encoder(_required(input_ids, "input_ids"))  # (N, text_width)
            parts.append(self.text_proj(text)[..., None, None])
        if self.cond_embed is not None:
            grid = self.cond_embed(_required(cond_tokens, "cond_tokens")).permute(0, 3, 1, 2)
            size = self.config.grid_size
            parts.append(self.cond_net(F.interpolate(grid, size=(size, size), mode="nearest")))
        return sum(parts[1:], parts[0]) if parts else None

    def forward(self, tokens: Tensor, cond: Tensor | None = None) -> Tensor:
        """Logits of each code given the codes before it: (N, num_tokens, h, w).

        Args:
            tokens: (N, h, w) code indices.
            cond: the output of `condition`, or None.
        """
        x = self.embed(tokens).permute(0, 3, 1, 2)  # (N, C, h, w)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Cross-entropy of the batch's `image_tokens` (nats per token) and bits per token.

        Args:
            batch: `image_tokens` (N, h, w) and, when conditioned, `class_labels` or `input_ids`.
        """
        tokens = batch["image_tokens"]
        cond = self.condition(batch.get("class_labels"), batch.get("input_ids"))
        nll = F.cross_entropy(self(tokens, cond).float(), tokens)
        return {"loss": nll, "bits_per_token": nll / math.log(2.0)}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        class_labels: Tensor | None = None,
        input_ids: Tensor | None = None,
        cond_tokens: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n code grids in raster order, one position per forward pass: (n, h, w).

        Args:
            n: number of grids.
            class_labels: (n,) when class-conditioned.
            input_ids: (n, L) caption tokens when caption-conditioned.
            cond_tokens: (n, h', w') conditioning codes when conditioned on a grid.
            temperature: softmax temperature (0 = greedy).
            top_k: keep only the k most likely codes at each step.
            top_p: keep only the nucleus of probability top_p at each step.
            generator: the source of randomness.
        """
        cond = self.condition(class_labels, input_ids, cond_tokens)
        size = self.config.grid_size
        tokens = torch.zeros(n, size, size, dtype=torch.long, device=self.device)
        for i in range(size):
            for j in range(size):
                logits = self(tokens, cond)[:, :, i, j]  # (n, K)
                tokens[:, i, j] = sample_logits(logits, temperature, top_k, top_p, generator)
        return tokens

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Code grids for the trainer (it decodes them with the tokenizer): the batch's own
        codes and samples for the batch's conditions.

        Args:
            batch: as for `training_losses`.
            generator: the source of randomness.
        """
        tokens = batch["image_tokens"]
        samples = self.sample(
            len(tokens), batch.get("class_labels"), batch.get("input_ids"), generator=generator
        )
        return {"data": tokens, "samples": samples}


class HierarchicalPixelCNN(T2IModel):
    """The VQ-VAE-2 prior: a PixelCNN over the top codes and one over the bottom codes
    conditioned on the top codes (and both, optionally, on classes or captions).

    Args:
        num_tokens: codebook size of each level.
        grid_sizes: (top, bottom) grid sides.
        channels: width of both PixelCNNs.
        num_layers: gated layers of each.
        kernel_size: odd kernel side.
        num_classes: > 0 conditions both on `class_labels`.
        text_width: > 0 conditions both on captions.
        text_layers: layers of each caption encoder.
        vocab_size: caption token vocabulary.
        context_length: longest caption in tokens.
    """

    @property
    def reads(self) -> frozenset[str]:
        """The codes, and the class labels and captions it is conditioned on."""
        return _condition_reads(self.config)

    @register_to_config
    def __init__(
        self,
        num_tokens: int = 512,
        grid_sizes: tuple[int, int] = (4, 8),
        channels: int = 128,
        num_layers: int = 8,
        kernel_size: int = 5,
        num_classes: int = 0,
        text_width: int = 0,
        text_layers: int = 2,
        vocab_size: int = VOCAB_SIZE,
        context_length: int = 32,
    ) -> None:
        super().__init__()
        common = dict(
            num_tokens=num_tokens,
            channels=channels,
            num_layers=num_layers,
            kernel_size=kernel_size,
            num_classes=num_classes,
            text_width=text_width,
            text_layers=text_layers,
            vocab_size=vocab_size,
            context_length=context_length,
        )
        self.top = PixelCNN(grid_size=grid_sizes[0], **common)
        self.bottom = PixelCNN(grid_size=grid_sizes[1], cond_num_tokens=num_tokens, **common)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Sum of both levels' cross-entropies; the bottom sees the true top codes.

        Args:
            batch: `image_tokens` = (top (N, h_t, w_t), bottom (N, h_b, w_b)), and conditions.
        """
        top, bottom = batch["image_tokens"]
        labels, ids = batch.get("class_labels"), batch.get("input_ids")
        nll_top = F.cross_entropy(self.top(top, self.top.condition(labels, ids)).float(), top)
        cond_b = self.bottom.condition(labels, ids, cond_tokens=top)
        nll_bottom = F.cross_entropy(self.bottom(bottom, cond_b).float(), bottom)
        return {"loss": nll_top + nll_bottom, "nll_top": nll_top, "nll_bottom": nll_bottom}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        class_labels: Tensor | None = None,
        input_ids: Tensor | None = None,
        generator: torch.Generator | None = None,
        **sampling: float | int | None,
    ) -> tuple[Tensor, Tensor]:
        """Draw top grids, then bottom grids given them: ((n, h_t, w_t), (n, h_b, w_b)).

        Args:
            n: number of grid pairs.
            class_labels: (n,) when class-conditioned.
            input_ids: (n, L) when caption-conditioned.
            generator: the source of randomness.
            **sampling: temperature, top_k, top_p, as in `PixelCNN.sample`.
        """
        top = self.top.sample(n, class_labels, input_ids, generator=generator, **sampling)
        bottom = self.bottom.sample(
            n, class_labels, input_ids, top, generator=generator, **sampling
        )
        return top, bottom

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch's own code pairs and sampled pairs, for the trainer to decode."""
        top, _ = batch["image_tokens"]
        samples = self.sample(
            len(top), batch.get("class_labels"), batch.get("input_ids"), generator
        )
        return {"data": batch["image_tokens"], "samples": samples}


def _condition_reads(config: Any) -> frozenset[str]:
    """The code grids, and the class labels and captions a PixelCNN config conditions on."""
    conditions = {"class_labels": config.num_classes, "input_ids": config.text_width}
    return frozenset({"image_tokens", *(k for k, v in conditions.items() if v)})


def _required(value: Tensor | None, name: str) -> Tensor:
    """The value, or an error naming the missing batch key."""
    if value is None:
        raise ValueError(f"this PixelCNN is conditioned on '{name}', and none was given")
    return value
