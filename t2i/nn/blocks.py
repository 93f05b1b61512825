"""Convolutional building blocks: a residual block, 2x down/up sampling, encoder/decoder stacks.

The residual block follows He et al. 2016 (pre-activation, "Identity Mappings in Deep Residual
Networks") with GroupNorm (Wu & He 2018) and SiLU, as in the DDPM / latent-diffusion U-Nets.
`Encoder` / `Decoder` map images to a spatial feature map and back (halving / doubling the
resolution once per stage); `VectorEncoder` / `VectorDecoder` wrap them for models whose latent
is a flat vector (VAE, CVAE, categorical VAE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide `channels`."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))).

    Args:
        in_channels: input channels.
        out_channels: output channels; a 1x1 convolution matches the skip path when they differ.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


def _res_blocks(in_channels: int, out_channels: int, n: int) -> list[ResBlock]:
    """n ResBlocks, the first changing the width from in_channels to out_channels."""
    return [ResBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(n)]


class Encoder(nn.Module):
    """Image -> feature map: `num_res_blocks` ResBlocks and a 2x downsampling per stage.

    Args:
        in_channels: image channels.
        channels: width of each stage; the output has 1 / 2**len(channels) of the resolution.
        out_channels: channels of the output feature map.
        num_res_blocks: ResBlocks per stage.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_channels: int,
        num_res_blocks: int = 1,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        stages, prev = [], channels[0]
        for ch in channels:
            stages += _res_blocks(prev, ch, num_res_blocks) + [Downsample(ch)]
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.conv_in(x))  # (B, C_last, H / 2**S, W / 2**S)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H / 2**S, W / 2**S)


class Decoder(nn.Module):
    """Feature map -> image: a 2x upsampling, then `num_res_blocks` ResBlocks, per stage.

    The mirror of `Encoder` (ResBlocks, then a downsampling): the ResBlocks of the last stage
    work at full resolution, where edges are drawn.

    Args:
        in_channels: channels of the input feature map.
        channels: width of each stage, listed as in the matching `Encoder` (used in reverse).
        out_channels: image channels.
        num_res_blocks: ResBlocks per stage.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_channels: int,
        num_res_blocks: int = 1,
    ) -> None:
        super().__init__()
        channels = tuple(channels)[::-1]
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        stages, prev = [], channels[0]
        for ch in channels:
            stages += [Upsample(prev), *_res_blocks(prev, ch, num_res_blocks)]
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        h = self.stages(self.conv_in(h))  # (B, C_first, H * 2**S, W * 2**S)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H * 2**S, W * 2**S)


def downsampled_size(image_size: int, num_stages: int) -> int:
    """Side of the feature map after `num_stages` 2x downsamplings; it must divide evenly."""
    factor = 2**num_stages
    if image_size % factor:
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**len(channels) = {factor}"
        )
    return image_size // factor


class VectorEncoder(nn.Module):
    """Image -> flat vector: `Encoder`, then flatten and a linear layer.

    Args:
        image_size: image side in pixels (square images).
        in_channels: image channels.
        channels: encoder stage widths.
        out_features: size of the output vector.
    """

    def __init__(
        self, image_size: int, in_channels: int, channels: Sequence[int], out_features: int
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        side = downsampled_size(image_size, len(channels))
        self.encoder = Encoder(in_channels, channels, channels[-1])
        self.proj = nn.Linear(channels[-1] * side * side, out_features)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)  # (B, C_last, s, s)
        return self.proj(F.silu(h).flatten(1))  # (B, out_features)


class VectorDecoder(nn.Module):
    """Flat vector -> image: a linear layer to the lowest-resolution feature map, then `Decoder`.

    Args:
        image_size: image side in pixels (square images).
        in_features: size of the input vector.
        channels: stage widths, listed as in the matching `VectorEncoder`.
        out_channels: image channels.
    """

    def __init__(
        self, image_size: int, in_features: int, channels: Sequence[int], out_channels: int
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.side = downsampled_size(image_size, len(channels))
        self.proj = nn.Linear(in_features, channels[-1] * self.side * self.side)
        self.decoder = Decoder(channels[-1], channels, out_channels)

    def forward(self, z: Tensor) -> Tensor:
        h = self.proj(z).unflatten(1, (-1, self.side, self.side))  # (B, C_last, s, s)
        return self.decoder(h)  # (B, out_channels, H, W)
