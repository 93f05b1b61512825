"""Image metrics shared by models and evaluation."""

from __future__ import annotations

import torch
from torch import Tensor


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio of each image pair in dB, images on [-1, 1]: (N,).

    On [-1, 1] the peak-to-peak range is 2, so PSNR = 10 log10(4 / MSE) (the same figure as
    on 0-255 images with 255^2 / MSE).

    Args:
        x: (N, ...) images.
        y: same shape as x.
    """
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp(min=1e-10))
