"""Building blocks shared by the models; imports nothing else of t2i."""

from t2i.nn.blocks import (
    Decoder,
    Downsample,
    Encoder,
    ResBlock,
    Upsample,
    VectorDecoder,
    VectorEncoder,
    downsampled_size,
)
from t2i.nn.diffusion import SAMPLERS, guided_denoise
from t2i.nn.discriminator import PatchDiscriminator, hinge_loss
from t2i.nn.quantizer import QuantizerOutput, VectorQuantizer, code_statistics, kmeans
from t2i.nn.text import CaptionEncoder
from t2i.nn.transformer import CacheMemory, KVCache, Transformer

__all__ = [
    "CacheMemory",
    "CaptionEncoder",
    "Decoder",
    "Downsample",
    "Encoder",
    "KVCache",
    "PatchDiscriminator",
    "ResBlock",
    "Transformer",
    "Upsample",
    "VectorDecoder",
    "VectorEncoder",
    "QuantizerOutput",
    "SAMPLERS",
    "VectorQuantizer",
    "code_statistics",
    "downsampled_size",
    "guided_denoise",
    "hinge_loss",
    "kmeans",
]
