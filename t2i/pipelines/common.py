"""What the route pipelines share: the saved-pipeline format, loading only the components a
route takes (and making one route's pipeline from another's components), sampling settings
as one dataclass resolved once against what the pipeline records, the stages two routes run
alike (tokenising, drawing codes, decoding them, CLIP reranking), and the output.

A saved pipeline is a directory with `model_index.json` and a folder per component; its
`model_index.json` also records the t2i version, the pipeline format and the sampling
settings its builder measured best (`_t2i_sampling`), and, for pipelines built by the
recipe or fine-tuning, which run each component came from and the weights of the components
it read (`_t2i_provenance`). `from_pretrained` refuses a directory whose format it cannot
read, and one whose components disagree (a decoder trained on another CLIP than the one
beside it draws noise without a word).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import numpy as np
import torch
import yaml
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from t2i._version import __version__
from t2i.cli import ROUTE_NAMES
from t2i.models import clip_score, load_model, resolve_dtype
from t2i.models.base import WeightsFileError
from t2i.models.external import files_id
from t2i.models.lora import (
    LoraError,
    attach_lora,
    check_base,
    fuse_lora,
    has_lora,
    read_lora,
    remove_lora,
    set_lora_scale,
    unfuse_lora,
)

PROVENANCE = "_t2i_provenance"  # model_index.json: component -> {run, id, reads}
FORMAT = 1  # bump when a saved pipeline's layout changes incompatibly
OUTPUT_TYPES = ("pil", "np", "pt")
PIPELINE_CLASSES = (  # saved by t2i
    "TextToImagePipeline",
    "DALLEPipeline",
    "UnCLIPPipeline",
    "LatentDiffusionPipeline",
    "MaskGITPipeline",
)


class PipelineFormatError(ValueError):
    """A directory that is not a t2i pipeline this version can load."""


@dataclass(frozen=True)
class SamplingSettings:
    """Base of a route's sampling settings. `RECORDED` names the fields a saved pipeline
    records (a call that leaves one None gets the recorded value, else the field's default)."""

    RECORDED: ClassVar[tuple[str, ...]] = ()
    PREFIX: ClassVar[str] = ""  # recorded as PREFIX + name (routes whose names would clash)

    @classmethod
    def resolve(cls, recorded: dict[str, Any], **given: Any) -> SamplingSettings:
        """The settings a call uses: each given value, else the recorded one, else the default.

        Args:
            recorded: the pipeline's `sampling_defaults`.
            **given: the call's arguments (None: not given).
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no setting {unknown[0]!r}; its settings: "
                f"{', '.join(sorted(names))}"
            )
        values = {}
        for field in dataclasses.fields(cls):
            value = given.get(field.name)
            if value is None and field.name in cls.RECORDED:
                value = recorded.get(cls.PREFIX + field.name)
            values[field.name] = field.default if value is None else value
        for name, value in values.items():
            check_setting(name, value)
        return cls(**values)

    @classmethod
    def library_defaults(cls) -> dict[str, Any]:
        """The recorded fields' defaults: what a pipeline records unless its builder says."""
        fields = dataclasses.fields(cls)
        return {cls.PREFIX + f.name: f.default for f in fields if f.name in cls.RECORDED}

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (for PNG metadata and JSON)."""
        return dataclasses.asdict(self)


# what a setting must be, by its name (or the end of it): a check and the words of the error
_FINITE = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_COUNT = (lambda v: v >= 1, "a whole number >= 1")
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "guidance_scale": _FINITE,
    "temperature": _FINITE,
    "top_k": _COUNT,
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "num_inference_steps": _COUNT,
    "prior_candidates": _COUNT,
    "rerank": (lambda v: v >= 0, "a whole number >= 0 (0: no reranking)"),
    "strength": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}


def check_setting(name: str, value: Any) -> None:
    """A ValueError naming a sampling setting whose value is out of range (None: unset).

    Args:
        name: the setting (`decoder_guidance_scale` follows the rule of `guidance_scale`).
        value: its value.
    """
    rule = SETTING_RULES.get(name) or next(
        (r for key, r in SETTING_RULES.items() if name.endswith("_" + key)), None
    )
    if rule is None or value is None:
        return
    ok, words = rule
    whole = words.startswith("a whole")  # an int, or a float such as 4.0
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (whole and not float(value).is_integer()) or not ok(value):
        raise ValueError(f"{name}={value!r}: must be {words}")


_KINDS = {int: "a whole number", float: "a number", str: "a name", bool: "true or false"}


def override_sampling(recorded: dict[str, Any], pairs: Sequence[str], where: str) -> dict[str, Any]:
    """`recorded` with NAME=VALUE pairs applied: each NAME one the pipeline records, each VALUE
    read as YAML, of the recorded value's kind (an int or float for a number) and in range
    (`check_setting`); a ValueError naming `where` and the pair otherwise.

    Args:
        recorded: a pipeline's `sampling_defaults`.
        pairs: "ldm_guidance_scale=4", ... (a later pair wins).
        where: the flag or field the pairs came from, for the errors.
    """
    out = dict(recorded)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{where} {pair!r}: give NAME=VALUE")
        if name not in recorded:
            raise ValueError(
                f"{where} {pair!r}: the pipeline records no {name!r}; it records "
                f"{', '.join(sorted(recorded))}"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        was = recorded[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(was, float) and number:
            value = float(value)
        elif was is not None and value is not None and type(value) is not type(was):
            if not (isinstance(was, int) and isinstance(value, float) and value.is_integer()):
                kind = _KINDS.get(type(was), type(was).__name__)
                raise ValueError(f"{where} {pair!r}: {name} takes {kind} (recorded {was!r})")
            value = int(value)
        try:
            check_setting(name, value)
        except ValueError as err:
            raise ValueError(f"{where} {pair!r}: {err}") from None
        if name.endswith("sampler") and value is not None:
            from t2i.pipelines.ldm import SAMPLERS

            if value not in SAMPLERS:
                raise ValueError(f"{where} {pair!r}: use one of {tuple(SAMPLERS)}")
        out[name] = value
    return out


@dataclass(frozen=True)
class CodeSampling(SamplingSettings):
    """How an autoregressive model over image codes samples (the DALL-E prior, the unCLIP
    decoder over codes).

    Args:
        guidance_scale: classifier-free guidance s; 1 turns it off.
        temperature: softmax temperature (0 = greedy).
        top_k: sample among the k most likely codes.
        top_p: sample within the nucleus of probability top_p.
    """

    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


@dataclass
class T2IPipelineOutput(BaseOutput):
    """A pipeline call's result.

    Args:
        images: prompt by prompt (best first when reranked): PIL images, an (N, H, W, 3)
            numpy array or an (N, 3, H, W) tensor in [0, 1].
        settings: the sampling settings the call used, resolved.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor
    settings: SamplingSettings | None = None


class T2IPipeline(DiffusionPipeline):
    """Base of the t2i pipelines: saving with the t2i format, loading only this route's
    components (`from_pretrained`), making a pipeline from another's (`from_pipe`), and the
    recorded sampling settings (`sampling_defaults`)."""

    _optional_components: ClassVar[list[str]] = []
    ROUTE: ClassVar[str | None] = None  # a route's pipeline: its name (dalle, unclip, ...)
    settings_classes: ClassVar[tuple[type[SamplingSettings], ...]] = ()

    def _init_defaults(self) -> None:
        """The sampling settings a call uses when it names none: the library's, until a saved
        pipeline's recorded ones replace them."""
        self.sampling_defaults = {}
        self.provenance: dict[str, Any] = {}  # component -> {run, id, reads}, when known
        for settings in self.settings_classes:
            self.sampling_defaults.update(settings.library_defaults())

    def recorded_settings(self) -> dict[str, Any]:
        """What a save records: the sampling defaults of this pipeline's own routes."""
        own = {s.PREFIX + name for s in self.settings_classes for name in s.RECORDED}
        return {k: v for k, v in self.sampling_defaults.items() if k in own}

    def saved_provenance(self) -> dict[str, Any]:
        """The provenance of the components this pipeline holds (copies: a save adds what
        each folder holds)."""
        return {
            k: dict(v) for k, v in self.provenance.items() if getattr(self, k, None) is not None
        }

    @property
    def routes(self) -> list[str]:
        """The routes it draws by: a route's pipeline its own (a bundle: those it holds)."""
        return [self.ROUTE] if self.ROUTE else []

    @property
    def image_size(self) -> int:
        """Side of the images it draws: its image tokenizer's, else its autoencoder's."""
        for part in (getattr(self, "image_tokenizer", None), getattr(self, "vae", None)):
            if part is not None:
                return int(part.image_size)
        raise AttributeError(f"{type(self).__name__} has no image tokenizer nor autoencoder")

    @classmethod
    def component_names(cls) -> list[str]:
        """The components this pipeline takes, required first."""
        expected, _ = cls._get_signature_keys(cls)
        return sorted(expected, key=lambda name: name in cls._optional_components)

    # ---- saving and loading ----------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """diffusers' save, then the t2i version, format and sampling settings recorded in
        model_index.json. A pipeline carrying LoRA adapters is refused: its adapters are
        saved apart, or fused and unloaded first to save the weights as they draw."""
        keep_others(Path(save_directory), self.components, kwargs.pop("overwrite", False))
        adapted = self.lora_components()
        if adapted:
            raise ValueError(
                f"its {', '.join(adapted)} carries LoRA adapters: save_pretrained would write "
                "them alone; call fuse_lora() and unload_lora_weights() first to save the "
                "fused weights, or unload_lora_weights() to save the base"
            )
        super().save_pretrained(save_directory, **kwargs)
        provenance = self.saved_provenance()
        for name, entry in provenance.items():  # what each folder holds now
            entry["weights"] = weights_id(Path(save_directory) / name)
        index = Path(save_directory) / "model_index.json"
        config = json.loads(index.read_text())
        config.update(
            {
                "_t2i_version": __version__,
                "_t2i_format": FORMAT,
                "_t2i_sampling": self.recorded_settings(),
                "_t2i_routes": self.routes,  # read by command lines before loading anything
                **({PROVENANCE: provenance} if provenance else {}),
            }
        )
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, torch_dtype: torch.dtype | None = None
    ) -> T2IPipeline:
        """Load this pipeline's components of a saved pipeline directory (a bundle of several
        routes, or this route's own), after checking it is one this t2i can read.

        Each component loads through `t2i.models.load_model` (by the class its config.json
        names), so any t2i tokenizer or prior can fill its slot.

        Args:
            pretrained_model_name_or_path: the directory `save_pretrained` wrote.
            torch_dtype: cast the weights to this dtype (None: as saved).

        Raises:
            FileNotFoundError: no such directory, no model_index.json, or a missing component.
            PipelineFormatError: not a t2i pipeline, or one of another format.
        """
        path = Path(pretrained_model_name_or_path)
        torch_dtype = resolve_dtype(torch_dtype)
        index = check_pipeline_dir(path)
        wanted = set(cls.component_names())  # a route loads its own parts of a bundle only
        record = index.get(PROVENANCE) or {}
        check_provenance(path, {k: v for k, v in record.items() if k in wanted})
        saved = saved_components(index)
        components = {}
        for name in cls.component_names():
            if name not in saved and name in cls._optional_components:
                continue
            components[name] = load_component(path, name, index, torch_dtype)
        pipe = cls(**components)
        pipe.sampling_defaults.update(index.get("_t2i_sampling") or {})
        pipe.provenance = index.get(PROVENANCE) or {}
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: T2IPipeline, **components: Any) -> T2IPipeline:
        """This pipeline over another's components (shared, not copied or reloaded), as
        diffusers' `from_pipe`; `components` add or replace some. The recorded sampling
        settings and the progress-bar settings come along.

        Args:
            pipeline: the pipeline whose components to take.
            **components: components to use instead (or that `pipeline` lacks).
        """
        have = {**pipeline.components, **components}
        parts = {n: have.get(n) for n in cls.component_names() if have.get(n) is not None}
        missing = [n for n in cls.component_names() if n not in parts]
        missing = [n for n in missing if n not in cls._optional_components]
        if missing:
            raise ValueError(
                f"{cls.__name__} needs {', '.join(missing)}, which the "
                f"{type(pipeline).__name__} does not have; pass them to from_pipe"
            )
        pipe = cls(**parts)
        pipe.sampling_defaults.update(pipeline.sampling_defaults)
        pipe.provenance = dict(getattr(pipeline, "provenance", {}))
        pipe.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        return pipe

    # ---- diffusers' step callback -----------------------------------------------------------

    _callback_tensor_inputs: ClassVar[list[str]] = ["codes"]  # what a step callback may see

    def callback_names(self, tensor_inputs: Sequence[str] | None) -> list[str]:
        """The tensors a call's `callback_on_step_end` gets (`callback_on_step_end_tensor_
        inputs`, checked against what this pipeline offers; None: all of them)."""
        names = list(self._callback_tensor_inputs if tensor_inputs is None else tensor_inputs)
        bad = [n for n in names if n not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {bad[0]!r} is not one of "
                f"{self._callback_tensor_inputs}"
            )
        return names

    def run_callback(
        self, callback: Callable | None, names: list[str], step: int, timestep: Any, x: Any
    ) -> Any:
        """Call diffusers' `callback_on_step_end(pipe, step, timestep, {name: tensor})` and
        return the tensor its returned dict holds (None: unchanged), as diffusers' pipelines
        use what the callback gives back."""
        if callback is None:
            return None
        name = self._callback_tensor_inputs[0]
        out = callback(self, step, timestep, {n: x for n in names})
        if out is None:
            return None
        if not isinstance(out, dict):
            raise ValueError(
                f"callback_on_step_end returned a {type(out).__name__}; return its dict of "
                "tensors (callback_kwargs), as diffusers' callbacks do"
            )
        return out.get(name)

    # ---- LoRA adapters ---------------------------------------------------------------------

    def lora_components(self) -> list[str]:
        """The components carrying LoRA adapters."""
        return [n for n, part in self.components.items() if has_lora(part)]

    def load_lora_weights(self, folder: str | Path, scale: float = 1.0) -> None:
        """Add a LoRA adapter folder's adapters to their components (unfused), as diffusers'
        `load_lora_weights`; every component is checked before any changes.

        Args:
            folder: an adapter folder (a LoRA fine-tuning's output).
            scale: multiplies each update (0: the base pipeline exactly).

        Raises:
            LoraError: not an adapter folder, adapters of a component it lacks or for other
                base weights (their base's id and this component's named), or adapters
                loaded already.
        """
        config, weights = read_lora(folder)
        source = config.get("base_pipeline", "")
        for name, entry in config["components"].items():  # all checked, then all attached
            part = getattr(self, name, None)
            if part is None:
                raise LoraError(
                    f"{folder}: adapters of a {name}, which this "
                    f"{type(self).__name__} does not hold"
                )
            check_base(part, entry, f"{folder} [{name}]", source)
        for name, entry in config["components"].items():
            attach_lora(getattr(self, name), entry, weights[name], scale, f"{folder} [{name}]")

    def set_lora_scale(self, scale: float) -> None:
        """Scale every loaded adapter's update (unfused): 0 draws as the base pipeline."""
        for name in self.lora_components():
            set_lora_scale(getattr(self, name), scale)

    def fuse_lora(self) -> None:
        """Fold the loaded adapters into the weights (no extra work per step)."""
        for name in self.lora_components():
            fuse_lora(getattr(self, name))

    def unfuse_lora(self) -> None:
        """Take fused adapters back out: the base weights bit for bit."""
        for name in self.lora_components():
            unfuse_lora(getattr(self, name))

    def unload_lora_weights(self) -> None:
        """Remove the adapter layers: unfused adapters are dropped (the base again), fused
        ones stay in the weights."""
        for name in self.lora_components():
            remove_lora(getattr(self, name))

    # ---- the stages routes share -----------------------------------------------------------

    def start_call(
        self,
        prompt: str | Sequence[str],
        n: int,
        settings: SamplingSettings,
        rerank: int | None,
        generator: Any,
        output_type: str,
    ) -> tuple[Any, list[str], int, Any]:
        """What every route's call does first: a recorded rerank (`rerank` not given) made at
        least one candidate per image, the prompts as a list, the arguments checked, and the
        generator checked; returns (settings, prompts, draws per prompt, generator)."""
        if rerank is None and getattr(settings, "rerank", None):
            settings = dataclasses.replace(settings, rerank=self.draws(n))
        prompts = prompt_list(prompt)
        draws = self.check_call(prompts, n, settings.rerank, output_type)
        return settings, prompts, draws, self.check_generator(generator, prompts, draws, n)

    def check_call(self, prompts: list[str], n: int, rerank: int | None, output_type: str) -> int:
        """Validate a call's common arguments; return the candidates drawn per prompt."""
        if not prompts:
            raise ValueError("no prompt given")
        if n < 1:
            raise ValueError(f"num_images_per_prompt={n} must be >= 1")
        if rerank and rerank < n:
            raise ValueError(f"rerank={rerank} candidates cannot yield {n} images per prompt")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: use one of {OUTPUT_TYPES}")
        return rerank or n  # None or 0: no reranking

    def draws(self, num_images_per_prompt: int, rerank: int | None = None) -> int:
        """The images a call draws per prompt: `rerank` candidates (0: none; None: the
        rerank this route records, if it records one, and at least one per image kept), else
        one per image. How many generators a list needs for one per image drawn."""
        if rerank is None:
            recorded = [s for s in self.settings_classes if "rerank" in s.RECORDED]
            rerank = self.sampling_defaults.get(recorded[0].PREFIX + "rerank") if recorded else 0
            return max(rerank or 0, num_images_per_prompt)
        return rerank or num_images_per_prompt

    @staticmethod
    def check_generator(
        generator: Any, prompts: list[str], draws: int, n: int | None = None
    ) -> Any:
        """A call's `generator`: one for the whole batch, or, as in diffusers, a list of one
        per image drawn (prompt by prompt, `draws` each), which makes image i of a prompt
        depend on its own generator alone, whatever the other prompts and images are. With
        reranking, a list of one per image returned (`n` a prompt) also does: candidate j
        draws from image j % n's generator, in turn."""
        if not isinstance(generator, list | tuple):
            return generator
        count = len(prompts) * draws
        if not all(isinstance(g, torch.Generator) for g in generator) or len(generator) not in (
            count,
            len(prompts) * (n or draws),
        ):
            raise ValueError(
                f"generator: a list of {len(generator)} for {count} images drawn "
                f"({len(prompts)} prompts x {draws}); give one torch.Generator, or one per "
                "image drawn"
            )
        if len(generator) == count:
            return list(generator)
        return [generator[p * n + j % n] for p in range(len(prompts)) for j in range(draws)]

    def caption_condition(
        self, reader: Any, prompts: list[str], draws: int, negatives: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The caption condition of a model over codes (`reader`: the DALL-E or the masked
        prior) for every image: input_ids and, for one that reads CLIP's token states,
        text_states (and negative_input_ids, negative_text_states for negative prompts, one
        per prompt); each prompt repeated `draws` times."""
        ids = self.clip.tokenize(prompts)
        if negatives:
            ids = torch.cat([ids, self.clip.tokenize(negatives, allow_empty=True)])
        ids = ids.to(self.device)
        if ids.shape[1] != reader.config.context_length:
            raise ValueError(
                f"CLIP tokenises to {ids.shape[1]} tokens; the prior reads "
                f"{reader.config.context_length}"
            )
        encoded = {"input_ids": ids}
        if "text_states" in reader.reads:
            encoded["text_states"] = self.clip.text_features(ids).states
        n = len(prompts)
        cond = {}
        for key, value in encoded.items():
            cond[key] = value[:n].repeat_interleave(draws, dim=0)
            if negatives:
                cond["negative_" + key] = value[n:].repeat_interleave(draws, dim=0)
        return cond

    def prime_codes(self, reader: Any, image: Any, rows: int, n: int) -> torch.Tensor | None:
        """The first `rows` rows of codes of `image` in the order `reader` (a model over the
        tokenizer's codes) reads them, for each of n images (or None without an image)."""
        if image is None or rows == 0:
            if image is not None:
                raise ValueError("an image was given to prime with but num_prime_rows=0")
            if rows:
                raise ValueError(f"num_prime_rows={rows} needs an image to prime with")
            return None
        side = reader.grids[0]
        if not 0 <= rows < side:
            raise ValueError(f"num_prime_rows={rows} must be in [0, {side})")
        x = image_tensor(image, self.image_tokenizer.config.image_size).to(self.device)
        codes = reader.flatten(self.image_tokenizer.encode(x))  # (1, image_len)
        return codes[:, : rows * side].expand(n, -1)

    def sample_codes(
        self,
        model: Any,
        cond: dict[str, torch.Tensor],
        sampling: CodeSampling,
        generator: torch.Generator | list[torch.Generator] | None,
        prime: torch.Tensor | None,
        callback_on_step_end: Callable | None,
    ) -> torch.Tensor:
        """An autoregressive model's sampling loop over codes under a progress bar:
        (N, image_len)."""
        start = 0 if prime is None else prime.shape[1]
        names = self.callback_names(None)  # the codes, the one tensor these routes offer
        with self.progress_bar(total=model.image_len - start) as bar:

            def step(i: int, codes: torch.Tensor) -> torch.Tensor | None:
                bar.update()
                return self.run_callback(callback_on_step_end, names, i - start, i, codes)

            return model.sample(
                cond.get("input_ids"),
                cond.get("text_states"),
                image_embeds=cond.get("image_embeds"),
                guidance_scale=sampling.guidance_scale,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                generator=generator,
                prime=prime,
                callback=step,
                negative_input_ids=cond.get("negative_input_ids"),
                negative_text_states=cond.get("negative_text_states"),
            )

    def decode_codes(self, model: Any, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, image_len) in `model`'s order -> images (N, 3, H, W) in [-1, 1]."""
        return self.image_tokenizer.decode(model.unflatten(codes)).float().clamp(-1, 1)

    def rerank(
        self, images: torch.Tensor, prompts: list[str], draws: int, keep: int
    ) -> torch.Tensor:
        """Each prompt's `keep` best of its `draws` candidates by CLIP score, best first."""
        groups = images.view(len(prompts), draws, *images.shape[1:])
        best = []
        for prompt, group in zip(prompts, groups, strict=True):
            # the prompt was warned of when it was encoded
            scores = clip_score(self.clip, group, [prompt], warn=False)[:, 0]  # (draws,)
            best.append(group[scores.argsort(descending=True)[:keep]])
        return torch.cat(best)

    def output(
        self,
        images: torch.Tensor,
        output_type: str,
        return_dict: bool,
        settings: SamplingSettings | None = None,
    ) -> T2IPipelineOutput | tuple:
        """The call's result in the asked form."""
        images = to_output(images, output_type)
        self.maybe_free_model_hooks()
        return T2IPipelineOutput(images=images, settings=settings) if return_dict else (images,)


def load_component(
    path: Path, name: str, index: dict, torch_dtype: torch.dtype | None = None
) -> Any:
    """One saved component: a diffusers scheduler by the class its index entry names, or a
    t2i model (by its config.json), in eval mode.

    Raises:
        FileNotFoundError: the component is not saved there.
    """
    library, class_name = (index.get(name) or [None, None])[:2]
    folder = path / name
    if library == "diffusers" and class_name.endswith("Scheduler"):
        if not (folder / "scheduler_config.json").is_file():
            raise FileNotFoundError(f"{path}: component {name!r} missing ({folder})")
        return getattr(diffusers, class_name).from_pretrained(str(folder))
    if library is None or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{path}: component {name!r} missing ({folder})")
    try:  # its weights file is checked as it loads: named with what still loads
        return load_model(folder, torch_dtype=torch_dtype).eval()
    except WeightsFileError as err:
        others = f"restore it (or load a route that does not use the {name})"
        if err.missing:
            raise PipelineFormatError(
                f"{path}: its {name} has no weights file in {folder}; {others}"
            ) from None
        raise PipelineFormatError(f"{err}; {others}") from None


def prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """One prompt or several, as a list; a TypeError naming anything else."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, Sequence) or not all(isinstance(p, str) for p in prompt):
        raise TypeError(f"prompt={prompt!r}: give a string or a list of strings")
    return list(prompt)


def negative_list(negative: str | Sequence[str] | None, prompts: list[str]) -> list[str] | None:
    """A call's negative prompts, one per prompt (one given applies to all; None: none).

    Raises:
        ValueError: neither one nor one per prompt.
    """
    if negative is None:
        return None
    negatives = prompt_list(negative)
    if len(negatives) == 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(
            f"negative_prompt: {len(negatives)} negative prompts for {len(prompts)} prompts; "
            "give one, or one per prompt"
        )
    return negatives


def keep_others(folder: Path, components: dict[str, Any], overwrite: bool) -> None:
    """A ValueError when `folder` holds a saved pipeline with components the one being saved
    lacks (a bundle, under a route's pipeline): its index would be replaced and those parts
    would no longer load. `overwrite` allows it."""
    index = folder / "model_index.json"
    if overwrite or not index.is_file():
        return
    try:
        held = saved_components(json.loads(index.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return  # not a readable index: nothing to lose by it
    lost = [n for n in held if components.get(n) is None]
    if lost:
        raise ValueError(
            f"{folder} holds a pipeline with {', '.join(lost)}, which this one lacks: saving "
            "here would replace its model_index.json and leave them unloadable; choose "
            "another folder, or pass overwrite=True"
        )


def saved_components(index: dict) -> list[str]:
    """The components a saved pipeline holds, by its model_index.json (those it records as
    saved, in the order it lists them)."""
    return [
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is not None
    ]


def weights_id(folder: str | Path) -> str:
    """The identity of a saved model: a hash of its safetensors files' bytes (16 hex digits).

    Args:
        folder: a saved model directory (config.json + safetensors).

    Raises:
        FileNotFoundError: it holds no safetensors file.
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no safetensors weights")
    return files_id(files)


def check_provenance(path: Path, record: dict[str, Any]) -> None:
    """Raise a PipelineFormatError when a component was trained reading another component
    than the one the pipeline holds, or a component's folder holds other weights than the
    pipeline was saved with (a folder copied in from another pipeline).

    Args:
        path: the pipeline (named in the error).
        record: its `_t2i_provenance`: component -> {run, id, reads: component -> id,
            weights: the saved folder's `weights_id`}.
    """
    for name, entry in record.items():
        saved = entry.get("weights")
        if saved is not None and (path / name).is_dir() and weights_id(path / name) != saved:
            raise PipelineFormatError(
                f"{path}: its {name} holds other weights than the pipeline was saved with, so "
                f"it may not fit the components beside it; save the pipeline again with t2i "
                f"(or restore its {name})"
            )
        for other, read in (entry.get("reads") or {}).items():
            holds = (record.get(other) or {}).get("id")
            if holds is not None and holds != read:
                raise PipelineFormatError(
                    f"{path}: its {name} was trained on another {other} ({read}) than the one it "
                    f"holds ({holds}); retrain the {name} on it, or leave the {name} out"
                )


def check_pipeline_dir(path: str | Path) -> dict:
    """model_index.json of a saved t2i pipeline this version reads; a clear error otherwise.

    Args:
        path: a pipeline directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such pipeline directory")
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no model_index.json; not a saved pipeline")
    config = json.loads(index.read_text())
    if config.get("_class_name") not in PIPELINE_CLASSES or "_t2i_format" not in config:
        raise PipelineFormatError(
            f"{index}: _class_name={config.get('_class_name')!r} with no _t2i_format; "
            "not a pipeline saved by t2i"
        )
    if config["_t2i_format"] != FORMAT:
        raise PipelineFormatError(
            f"{index}: pipeline format {config['_t2i_format']} (saved by t2i "
            f"{config.get('_t2i_version', '?')}); this t2i reads format {FORMAT}"
        )
    check_recorded(index, config)
    return config


def check_recorded(index: Path, config: dict) -> None:
    """A PipelineFormatError naming model_index.json and the field for recorded values a user
    may have edited: the sampling settings and the routes."""
    sampling = config.get("_t2i_sampling") or {}
    if not isinstance(sampling, dict):
        raise PipelineFormatError(f"{index}: _t2i_sampling={sampling!r} is not a mapping")
    for name, value in sampling.items():
        try:
            check_setting(name, value)
        except ValueError as err:
            raise PipelineFormatError(f"{index}: _t2i_sampling.{err}") from None
    routes = config.get("_t2i_routes")
    if routes is not None and (not isinstance(routes, list) or not set(routes) <= set(ROUTE_NAMES)):
        raise PipelineFormatError(
            f"{index}: _t2i_routes={routes!r}: a list of dalle, unclip, ldm, maskgit"
        )


def image_tensor(image: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """A PIL image or a (3, H, W) / (1, 3, H, W) tensor in [-1, 1] -> (1, 3, size, size)."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), np.float32)
        return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0
    x = image[None] if image.dim() == 3 else image
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bicubic")
    return x.float()


def to_output(images: torch.Tensor, output_type: str) -> Any:
    """Images (N, 3, H, W) in [-1, 1] as PIL images, a numpy array or a tensor in [0, 1]."""
    x = (images + 1) / 2
    if output_type == "pt":
        return x.cpu()
    array = x.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]
