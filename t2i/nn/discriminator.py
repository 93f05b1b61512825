"""A PatchGAN discriminator and its hinge loss, for the autoencoders' adversarial term.

- Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks"
  (pix2pix), section 3.2.2: a fully convolutional discriminator that scores overlapping
  patches (a grid of logits, not one per image), so it judges texture and sharpness locally.
  4x4 convolutions, the first `layers` with stride 2 and then two with stride 1, LeakyReLU
  0.2, a norm after every convolution but the first and the last, weights drawn from
  N(0, 0.02) (the DCGAN initialisation, Radford et al. 2016).
- Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis"
  (VQGAN) train it with the hinge loss of Lim & Ye 2017 / Miyato et al. 2018:
  L_D = 1/2 [mean relu(1 - D(x)) + mean relu(1 + D(x_hat))].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

MAX_WIDTH_FACTOR = 8  # the widest layer has 8 x `channels` (pix2pix's cap)


class PatchDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN discriminator (taming's `NLayerDiscriminator`, BatchNorm).

    An image side s gives a logit grid of side s / 2**layers - 2 (the two stride-1
    convolutions each take one off), so it needs s >= 3 * 2**layers; each logit sees a
    34 x 34 patch with 2 layers, 70 x 70 with 3.

    Args:
        in_channels: image channels.
        channels: width of the first layer; each stride-2 layer doubles it (up to 8x).
        layers: convolutions with stride 2 (the first of them without a norm).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers={layers} must be at least 1")
        widths = [channels * min(2**i, MAX_WIDTH_FACTOR) for i in range(layers + 1)]
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for i in range(1, layers + 1):  # stride 2, then (the last) stride 1
            stride = 2 if i < layers else 1
            blocks += [
                nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        blocks.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)
        self.apply(_dcgan_init)

    @staticmethod
    def grid_size(image_size: int, layers: int) -> int:
        """Side of the logit grid for square images of side `image_size` (< 1: too small)."""
        return image_size // 2**layers - 2

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)  # (B, 1, s / 2**layers - 2, s / 2**layers - 2)


def _dcgan_init(module: nn.Module) -> None:
    """Convolution weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
    if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and module.bias is not None:
        nn.init.zeros_(module.bias)


def hinge_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's hinge loss, 1/2 [mean relu(1 - real) + mean relu(1 + fake)]."""
    real = F.relu(1.0 - logits_real.float()).mean()
    fake = F.relu(1.0 + logits_fake.float()).mean()
    return 0.5 * (real + fake)
