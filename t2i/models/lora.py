"""LoRA adapters on a t2i model's projections, through peft.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3: a frozen weight
W0 of a linear map gets a trainable low-rank update, h = W0 x + (alpha / r) B A x, with A
(r x in) random and B (out x r) zero at the start, so the adapted model starts as the base.
Only A and B train; they are saved alone (kilobytes to a few MiB) and can be folded into W0
(`fuse_lora`: W0 + (alpha / r) s B A) or kept apart and scaled (`set_lora_scale`; scale 0 is
the base exactly).

Each model names where its adapters go (`T2IModel.lora_defaults`: the latent denoiser's
attention projections, diffusers' default; the priors' attention and MLP; CLIP's text
tower); peft's `inject_adapter_in_model` wraps those `nn.Linear`s. An adapter folder holds
`lora_config.json` (per component: rank, alpha, the wrapped layers, the base's weights id)
and `lora.safetensors` (keys `COMPONENT.LAYER.lora_A.weight`, ...). Adapters made for other
base weights are refused by that id: they would draw noise without a word.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER = "t2i"  # peft's adapter name
CONFIG_FILE = "lora_config.json"  # also t2i.cli.LORA_CONFIG (the command lines import no torch)
WEIGHTS_FILE = "lora.safetensors"
FORMAT = 1  # bump when an adapter folder's layout changes incompatibly
SPEC_KEYS = ("rank", "alpha", "targets", "dropout")
PRIOR_LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")  # t2i.nn.transformer's blocks


class LoraError(ValueError):
    """Adapters that do not fit: another base, a layer the model lacks, a bad folder."""


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What adapters to add (`model.lora` of a fine-tuning config).

    Args:
        rank: r, the update's rank.
        alpha: the update is scaled by alpha / r (None: alpha = r, a scale of 1).
        targets: names (or name endings) of the `nn.Linear` layers to adapt, within the
            model's LoRA scope (None: the model's defaults, `T2IModel.lora_defaults`).
        dropout: dropout on the adapters' input while training.
    """

    rank: int = 4
    alpha: float | None = None
    targets: tuple[str, ...] | None = None
    dropout: float = 0.0

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> LoraSpec:
        """A spec from a config's `model.lora` mapping, each key and value checked.

        Raises:
            LoraError: an unknown key, or a value of the wrong type or range, named.
        """
        if not isinstance(raw, Mapping):
            raise LoraError(f"{where}: model.lora must be a mapping of {', '.join(SPEC_KEYS)}")
        unknown = sorted(set(raw) - set(SPEC_KEYS))
        if unknown:
            raise LoraError(
                f"{where}: unknown key 'model.lora.{unknown[0]}' ({', '.join(SPEC_KEYS)})"
            )
        rank, alpha = raw.get("rank", 4), raw.get("alpha")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise LoraError(f"{where}: model.lora.rank={rank!r}: a whole number, 1 or more")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)):
            raise LoraError(f"{where}: model.lora.alpha={alpha!r}: a number")
        if alpha is not None and alpha <= 0:
            raise LoraError(f"{where}: model.lora.alpha={alpha!r}: above 0")
        targets = raw.get("targets")
        if targets is not None and (
            not isinstance(targets, list | tuple)
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise LoraError(f"{where}: model.lora.targets={targets!r}: a list of layer names")
        dropout = raw.get("dropout", 0.0)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise LoraError(f"{where}: model.lora.dropout={dropout!r}: a number in [0, 1)")
        return cls(rank, alpha, tuple(targets) if targets else None, float(dropout))


def base_id(model: nn.Module) -> str:
    """The identity of a model's base weights: a hash of its state (parameters and saved
    buffers, in float16, adapters left out), so one model in float32 and float16 is one base.

    Args:
        model: a t2i model, with or without adapters (unfused: fused ones changed the base).
    """
    if lora_fused(model):
        raise LoraError("its adapters are fused into the weights; unfuse_lora() first")
    digest = hashlib.sha256()
    state = {_base_name(k): v for k, v in model.state_dict().items() if "lora_" not in k}
    for name in sorted(state):
        tensor = state[name]
        data = tensor.detach().to("cpu", torch.float16 if tensor.is_floating_point() else None)
        digest.update(name.encode() + b"\0" + str(tuple(data.shape)).encode())
        digest.update(data.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _base_name(key: str) -> str:
    return key.replace(".base_layer.", ".")


def lora_layers(model: nn.Module) -> Iterator[BaseTunerLayer]:
    """The layers of a model that carry adapters."""
    return (m for m in model.modules() if isinstance(m, BaseTunerLayer))


def has_lora(model: nn.Module) -> bool:
    """Whether a model carries adapters."""
    return getattr(model, "lora_record", None) is not None


def lora_fused(model: nn.Module) -> bool:
    """Whether a model's adapters are folded into its weights."""
    return any(layer.merged for layer in lora_layers(model))


def target_names(model: nn.Module, scope: str, targets: tuple[str, ...]) -> list[str]:
    """The `nn.Linear` layers within `scope` that `targets` name (whole names or endings).

    Raises:
        LoraError: a target that names no linear layer (with some it could name).
    """
    root = model.get_submodule(scope)  # "" is the model itself
    linear = [n for n, m in root.named_modules() if isinstance(m, nn.Linear) and n]
    names = []
    for target in targets:
        found = [n for n in linear if n == target or n.endswith("." + target)]
        if not found:
            some = sorted({n.rsplit(".", 1)[-1] for n in linear})[:8]
            raise LoraError(
                f"model.lora.targets: {target!r} names no linear layer of the "
                f"{type(model).__name__} (its layers end in {', '.join(some)}, ...)"
            )
        names += [n for n in found if n not in names]
    return names


def add_lora(model: nn.Module, spec: LoraSpec) -> int:
    """Freeze a model and add trainable adapters where `spec` says; return how many
    parameters train.

    Args:
        model: a t2i model (`T2IModel.lora_defaults` names its scope and default targets).
        spec: the adapters.
    """
    if has_lora(model):
        raise LoraError(f"the {type(model).__name__} carries adapters already")
    scope, defaults = model.lora_defaults()
    names = target_names(model, scope, spec.targets or defaults)
    record = {
        "rank": spec.rank,
        "alpha": float(spec.alpha if spec.alpha is not None else spec.rank),
        "dropout": spec.dropout,
        "scope": scope,
        "targets": names,
        "class": type(model).__name__,
        "base": base_id(model),
    }
    model.requires_grad_(False)
    _inject(model, record)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _inject(model: nn.Module, record: dict[str, Any]) -> None:
    """Wrap the recorded layers with zero-initialised adapters (peft), trainable."""
    config = LoraConfig(
        r=record["rank"],
        lora_alpha=record["alpha"],
        lora_dropout=record.get("dropout", 0.0),
        target_modules=list(record["targets"]),
    )
    root = model.get_submodule(record["scope"])
    inject_adapter_in_model(config, root, adapter_name=ADAPTER)
    for name, param in root.named_parameters():
        param.requires_grad_("lora_" in name)
    model.lora_record = dict(record)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights (peft's names, within the model's LoRA scope)."""
    root = model.get_submodule(model.lora_record["scope"])
    state = get_peft_model_state_dict(root, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_lora(folder: str | Path, models: Mapping[str, nn.Module], **extra: Any) -> Path:
    """Save the adapters of models (component -> model) alone into a folder.

    Args:
        folder: the adapter folder (made if missing).
        models: the components whose adapters to save.
        **extra: more to record in lora_config.json (the base pipeline it was trained from).
    """
    weights, components = {}, {}
    for name, model in models.items():
        weights.update({f"{name}.{k}": v for k, v in lora_state_dict(model).items()})
        components[name] = dict(model.lora_record)
    return write_lora(folder, components, weights, **extra)


def write_lora(
    folder: str | Path, components: dict[str, dict], weights: dict[str, torch.Tensor], **extra: Any
) -> Path:
    """Write an adapter folder: lora_config.json (the components' records and `extra`) and
    lora.safetensors (`weights`, keys COMPONENT.LAYER...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"t2i_lora_format": FORMAT, "components": components, **extra}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return folder


def read_lora(folder: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """An adapter folder's record and its weights by component, checked to be readable.

    Raises:
        LoraError: no such folder, not an adapter folder, another format, or a weights file
            whose keys disagree with the record.
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise LoraError(f"{folder}: no {CONFIG_FILE}; not a LoRA adapter folder saved by t2i")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise LoraError(f"{folder / CONFIG_FILE}: not JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(config, dict) or config.get("t2i_lora_format") != FORMAT:
        got = config.get("t2i_lora_format") if isinstance(config, dict) else None
        raise LoraError(f"{folder / CONFIG_FILE}: t2i_lora_format={got!r}; this t2i reads {FORMAT}")
    components = config.get("components")
    if not isinstance(components, dict) or not components:
        raise LoraError(f"{folder / CONFIG_FILE}: 'components' names no adapted component")
    for name, entry in components.items():
        _check_entry(folder / CONFIG_FILE, name, entry)
    try:
        flat = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # an OSError, or safetensors' own error class
        raise LoraError(f"{folder / WEIGHTS_FILE}: unreadable ({err})") from err
    weights = {name: {} for name in components}
    for key, value in flat.items():
        name, _, rest = key.partition(".")
        if name not in weights:
            raise LoraError(f"{folder / WEIGHTS_FILE}: {key!r} is of no component it records")
        weights[name][rest] = value
    return config, weights


def _check_entry(where: Path, name: str, entry: Any) -> None:
    """One component's record: rank, alpha, scope, targets and base, of their types."""
    kinds = {"rank": int, "alpha": (int, float), "scope": str, "targets": list, "base": str}
    if not isinstance(entry, dict):
        raise LoraError(f"{where}: components.{name} is not a mapping")
    for key, kind in kinds.items():
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise LoraError(
                f"{where}: components.{name}.{key}={entry.get(key)!r} is missing or bad"
            )
    if entry["rank"] < 1 or entry["alpha"] <= 0:
        raise LoraError(f"{where}: components.{name}: rank and alpha must be above 0")


def check_base(model: nn.Module, entry: dict[str, Any], where: str, source: str = "") -> None:
    """A LoraError unless `model` is the base that `entry`'s adapters were made for (its class
    and weights id) and carries no adapters yet.

    Args:
        model: the model to adapt.
        entry: the component's record in lora_config.json.
        where: named in errors (the folder and component).
        source: where that base can be found (the pipeline the adapters were trained from).
    """
    if has_lora(model):
        raise LoraError(
            f"{where}: the {type(model).__name__} carries adapters already; "
            "unload_lora_weights() first"
        )
    if entry.get("class") not in (None, type(model).__name__):
        raise LoraError(f"{where}: adapters of a {entry['class']}, not a {type(model).__name__}")
    own = base_id(model)
    if own != entry["base"]:
        raise LoraError(
            f"{where}: made for other base weights ({entry['base']}) than this "
            f"{type(model).__name__}'s ({own}); load the pipeline they were trained from"
            + (f" ({source})" if source else "")
        )


def load_lora(
    model: nn.Module,
    entry: dict[str, Any],
    weights: dict[str, torch.Tensor],
    scale: float = 1.0,
    where: str = "adapters",
) -> None:
    """Add saved adapters to a model, refusing those made for another base (`check_base`).

    Args:
        model: the base model (no adapters yet).
        entry: the component's record in lora_config.json.
        weights: its adapters' weights (`read_lora`).
        scale: multiplies the update (0: the base exactly).
        where: named in errors (the folder and component).
    """
    check_base(model, entry, where)
    attach_lora(model, entry, weights, scale, where)


def attach_lora(
    model: nn.Module,
    entry: dict[str, Any],
    weights: dict[str, torch.Tensor],
    scale: float,
    where: str,
) -> None:
    """Add saved adapters to a model `check_base` has passed (`load_lora`'s second half)."""
    try:
        target_names(model, entry["scope"], tuple(entry["targets"]))
    except (LoraError, AttributeError) as err:
        raise LoraError(f"{where}: {err}") from err
    _inject(model, entry)
    root = model.get_submodule(entry["scope"])
    reference = next(p for p in root.parameters())
    weights = {k: v.to(reference.device, reference.dtype) for k, v in weights.items()}
    result = set_peft_model_state_dict(root, weights, adapter_name=ADAPTER)
    missing = [k for k in result.missing_keys if "lora_" in k]
    wrong = missing or list(result.unexpected_keys)
    if wrong:
        raise LoraError(f"{where}: its weights do not fit the layers it records ({wrong[0]})")
    model.requires_grad_(False)
    set_lora_scale(model, scale)


def set_lora_scale(model: nn.Module, scale: float) -> None:
    """Scale a model's (unfused) adapters' update: scale x alpha / r."""
    if lora_fused(model):
        raise LoraError("its adapters are fused into the weights; unfuse_lora() first")
    for layer in lora_layers(model):
        layer.set_scale(ADAPTER, float(scale))


def fuse_lora(model: nn.Module) -> None:
    """Fold a model's adapters into its weights (faster to run; `unfuse_lora` undoes it).
    Each base weight is kept aside, so that unfusing gives it back bit for bit (subtracting
    the update again, as peft's `unmerge` does, leaves rounding errors in it)."""
    for layer in lora_layers(model):
        if not layer.merged:
            layer.t2i_unfused = layer.get_base_layer().weight.detach().clone()
            layer.merge(adapter_names=[ADAPTER])


def unfuse_lora(model: nn.Module) -> None:
    """Take fused adapters back out of a model's weights: the base weights as they were."""
    for layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
            layer.get_base_layer().weight.data.copy_(layer.t2i_unfused)
            del layer.t2i_unfused


def remove_lora(model: nn.Module) -> None:
    """Take the adapter layers out of a model, each back to its base layer: fused adapters
    stay in the weights (a model to save as it draws), unfused ones are dropped."""
    record = getattr(model, "lora_record", None)
    if record is None:
        return
    root = model.get_submodule(record["scope"])
    for name, module in list(root.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent), child, module.get_base_layer())
    model.lora_record = None
