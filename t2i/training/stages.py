"""The stage graph: a pipeline's trainable components in the order they train, and which
component prepares what a later stage reads. Fine-tuning (`t2i.finetune`) and the default
build (scripts/build_default.py) both walk it; what each stage reads comes from its model's
declared inputs (`model.reads` -> `t2i.training.inputs.needs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

COMPONENTS = (  # in training order
    "image_tokenizer",
    "clip",
    "prior",
    "diffusion_prior",
    "decoder",
    "vae",  # the latent diffusion route's autoencoder
    "unet",  # ... and its denoiser
    "masked_prior",  # the masked route's prior
)
PREPARED_BY = {  # data key -> the component whose model it names
    "tokenizer": "image_tokenizer",
    "clip": "clip",
    "autoencoder": "vae",
}
READS_OF = {c: key for key, c in PREPARED_BY.items()}  # a component -> the data key naming it


def readers(stages: Sequence[tuple[str, str]], index: int, keys: Iterable[str]) -> dict[str, str]:
    """The stages whose models a stage reads: data key -> the latest earlier stage that
    trained the component preparing it.

    Args:
        stages: (stage, component it trains) in training order.
        index: the reading stage's place in `stages`.
        keys: the data keys it needs (`tokenizer`, `clip`).

    Raises:
        ValueError: no earlier stage trains a component the stage reads.
    """
    found = {}
    for key in keys:
        before = [s for s, component in stages[:index] if component == PREPARED_BY[key]]
        if not before:
            raise ValueError(
                f"stage {stages[index][0]} reads data.{key}, but no stage before it trains "
                f"the {PREPARED_BY[key]}"
            )
        found[key] = before[-1]
    return found


def final_stages(stages: Sequence[tuple[str, str]]) -> dict[str, str]:
    """component -> the last stage training it (whose model the pipeline holds), in order."""
    last = {component: stage for stage, component in stages}
    return {c: last[c] for c in COMPONENTS if c in last}
