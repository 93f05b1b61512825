"""The interface every image tokenizer has: images -> grids of discrete codes -> images.

A tokenizer turns an image into a grid of code indices (`encode`) and a grid back into an
image (`decode`); the priors (PixelCNN, the autoregressive transformer) model the grids. A
one-level tokenizer (`DiscreteVAE`, `VQVAE`) works on one (N, h, w) grid; a hierarchical one
(`VQVAE2`) on a tuple of grids, coarsest first, and its `grid_size` and `downsample_factor`
are tuples in the same order.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from t2i.models.base import T2IModel

Tokens = Tensor | tuple[Tensor, ...]  # one (N, h, w) grid, or one per level, coarsest first


class ImageTokenizer(T2IModel, abc.ABC):
    """Base class of the image tokenizers. Subclasses implement `encode`, `decode`,
    `num_tokens` and `grid_size` (and `training_losses` for the trainer); every tokenizer's
    config has `image_size`."""

    @abc.abstractmethod
    def encode(self, pixel_values: Tensor) -> Tokens:
        """Code indices of images.

        Args:
            pixel_values: (N, 3, H, W) in [-1, 1].

        Returns:
            int64 (N, h, w), or a tuple of such grids for a hierarchical tokenizer.
        """

    @abc.abstractmethod
    def decode(self, tokens: Tokens) -> Tensor:
        """Images from code indices, (N, 3, H, W) in [-1, 1].

        Args:
            tokens: what `encode` returns.
        """

    @property
    @abc.abstractmethod
    def num_tokens(self) -> int:
        """Codebook size: indices lie in [0, num_tokens)."""

    @property
    @abc.abstractmethod
    def grid_size(self) -> int | tuple[int, ...]:
        """Side of the (square) code grid; a tuple, coarsest first, for several levels."""

    @property
    def image_size(self) -> int:
        """Side of the square images it encodes, in pixels (as a latent autoencoder's)."""
        return self.config.image_size

    @property
    def downsample_factor(self) -> int | tuple[int, ...]:
        """Image side over grid side; a tuple, coarsest first, for several levels."""
        grid = self.grid_size
        if isinstance(grid, tuple):
            return tuple(self.config.image_size // g for g in grid)
        return self.config.image_size // grid

    @torch.no_grad()
    def reconstruct(self, pixel_values: Tensor) -> Tensor:
        """decode(encode(x)): what survives the trip through the codes, (N, 3, H, W).

        Args:
            pixel_values: (N, 3, H, W) in [-1, 1].
        """
        return self.decode(self.encode(pixel_values))

    @torch.no_grad()
    def log_images(
        self, batch: dict, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Image grids for the trainer: inputs and their reconstructions through the codes.

        Args:
            batch: a dict with `pixel_values` (N, 3, H, W) in [-1, 1].
            generator: unused (reconstruction is deterministic); part of the trainer's call.
        """
        x = batch["pixel_values"]
        return {"inputs": x, "reconstructions": self.reconstruct(x)}
