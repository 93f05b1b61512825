"""The base of every trainable t2i model: diffusers' `ModelMixin` + `ConfigMixin`.

`from_pretrained` gives the loaded weights storage of their own. diffusers hands back tensors
that are views into the memory-mapped safetensors file, at offsets that are not 64-byte
aligned; CPU kernels (a matrix-vector product, for one) then round differently than on the
freshly allocated weights that were saved, and a save -> load round trip stops being bit
for bit. A copy per tensor, once at load time, restores it and releases the file.
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import ConfigMixin, ModelMixin
from safetensors import safe_open

from t2i.config import ConfigError, check_kwargs, read_text
from t2i.models.lora import LoraError, has_lora, save_lora

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def resolve_dtype(value: Any, where: str = "torch_dtype") -> torch.dtype | None:
    """A weights dtype from a torch.dtype or its name ("float16", "fp16", "torch.bfloat16"),
    None as None; a ValueError naming `where` and the value for anything else (diffusers
    would load float32 in silence for a string)."""
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        value = DTYPES.get(DTYPE_NAMES.get(name, name), value)
    if value not in DTYPES.values():
        raise ValueError(
            f"{where}={value!r}: use one of {', '.join(DTYPES)} (or torch.float32, ...)"
        )
    return value


class WeightsFileError(ValueError):
    """A saved model's weights file is missing, truncated or unreadable (`missing` says
    which); `check_weights_files` raises it before diffusers would look for a .bin instead,
    or fail without a reason."""

    def __init__(self, message: str, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def check_weights_files(folder: Path) -> None:
    """A WeightsFileError naming a saved model's weights file when there is none, or one is
    truncated or unreadable."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsFileError(f"{folder}: no weights file (*.safetensors)", missing=True)
    for file in files:
        try:
            with safe_open(str(file), "pt") as weights:
                weights.keys()
        except Exception as err:  # safetensors raises its own error types
            reason = str(err).split(":")[-1].strip() or type(err).__name__
            raise WeightsFileError(
                f"{file}: truncated or unreadable ({reason})", missing=False
            ) from None


def read_config(file: Path) -> dict:
    """A saved model's config.json as a dict; a ValueError naming the file when it is not
    UTF-8 JSON holding an object."""
    try:
        config = json.loads(read_text(file))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not JSON (line {err.lineno}, column {err.colno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: not a JSON object of settings")
    return config


def check_saved_config(cls: type, folder: Path) -> None:
    """A saved model's config.json, checked before diffusers reads it: UTF-8 JSON holding a
    mapping, each value a constructor argument takes of its declared type (a hand-edited
    file's mistake named by file and key, not found deep in the model's construction)."""
    file = folder / "config.json"
    if not file.is_file():
        return  # diffusers names it
    config = read_config(file)
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    try:  # keys the constructor no longer takes are diffusers' to ignore
        check_kwargs(cls.__init__, {k: v for k, v in config.items() if k in known}, str(file))
    except ConfigError as err:
        raise ValueError(str(err)) from None


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
        """diffusers' `ModelMixin.from_pretrained`, then each tensor copied to its own storage.
        A local folder's config.json and weights file are checked first, and a dtype may be
        named ("float16"), which diffusers would ignore in favour of float32."""
        if "torch_dtype" in kwargs:
            kwargs["torch_dtype"] = resolve_dtype(kwargs["torch_dtype"])
        folder = Path(args[0]) if args and isinstance(args[0], str | Path) else None
        if folder is not None and (folder / "config.json").is_file():
            check_saved_config(cls, folder)
            if "subfolder" not in kwargs:
                check_weights_files(folder)
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
