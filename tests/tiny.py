"""Tiny model settings shared by the tests: keyword arguments, and the same as CLI overrides."""

from __future__ import annotations

CLIP = dict(
    embed_dim=16,
    image_size=16,
    patch_size=4,
    vision_width=32,
    vision_layers=1,
    vision_heads=2,
    text_width=32,
    text_layers=1,
    text_heads=2,
    context_length=32,
)
VQ = dict(channels=[8, 16], num_res_blocks=1, embed_dim=8, codebook_size=32)

# overrides for the command lines (configs/shapes/*.yaml keep their 32 px images)
DATA = ["data.num_train=256", "data.num_val=4", "train.warmup_steps=5", "train.log_every=5"]


def overrides(section: str, values: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """`section.key=value` strings for the command line."""
    return [f"{section}.{k}={v}" for k, v in values.items() if k not in skip]


CLIP_ARGS = overrides("model", CLIP, skip=("image_size", "context_length"))
VQ_ARGS = overrides("model", VQ)
