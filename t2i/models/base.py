"""The base of every trainable t2i model: diffusers' `ModelMixin` + `ConfigMixin`.

`from_pretrained` gives the loaded weights storage of their own. diffusers hands back tensors
that are views into the memory-mapped safetensors file, at offsets that are not 64-byte
aligned; CPU kernels (a matrix-vector product, for one) then round differently than on the
freshly allocated weights that were saved, and a save -> load round trip stops being bit
for bit. A copy per tensor, once at load time, restores it and releases the file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

from diffusers import ConfigMixin, ModelMixin

from t2i.models.lora import LoraError, has_lora, save_lora


class T2IModel(ModelMixin, ConfigMixin):
    """A diffusers model whose `from_pretrained` reproduces the saved model's outputs exactly.

    Subclasses decorate `__init__` with `register_to_config`, as any diffusers model, and
    declare in `READS` (or, when it depends on the config, a `reads` property) the batch
    inputs their `training_losses` reads: `pixel_values` and `input_ids` come from the data
    set and its collator; the others are prepared from another trained model
    (`t2i.training.inputs`): `image_tokens` (an image tokenizer's codes), `text_states` and
    `text_embeds` (a frozen CLIP's caption token states and text embedding), `image_embeds`
    (its image embedding).
    """

    READS: ClassVar[frozenset[str]] = frozenset({"pixel_values"})

    @property
    def reads(self) -> frozenset[str]:
        """The batch inputs this model's `training_losses` reads."""
        return self.READS

    def lora_defaults(self) -> tuple[str, tuple[str, ...]]:
        """Where LoRA adapters go (`t2i.models.lora`): the submodule holding them ("" for the
        whole model) and the endings of the linear layers adapted by default."""
        raise LoraError(f"a {type(self).__name__} takes no LoRA adapters")

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """diffusers' save; a model carrying LoRA adapters saves them alone (an adapter
        folder naming its base, `lora_base_path`), never its frozen base again."""
        if has_lora(self):
            base = getattr(self, "lora_base_path", None)
            save_lora(save_directory, {"model": self}, base_path=base and str(base))
            return
        super().save_pretrained(save_directory, **kwargs)

    def load_pretrained_parts(self) -> None:
        """Read into a newly built model the weights of the pretrained parts its config names
        from outside t2i (a CLIP's Hugging Face text tower); none by default. Training calls
        it on a model it builds from a config, never on one loaded from its own save."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """diffusers' `ModelMixin.from_pretrained`, then each tensor copied to its own storage."""
        model = super().from_pretrained(*args, **kwargs)
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.data = tensor.data.clone()
        return model


def plain(value: Any) -> Any:
    """Tuples as lists, all the way down: a diffusers config (a pretrained folder's) as a
    t2i config argument that saves to JSON and reads back equal."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
