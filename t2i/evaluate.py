"""Evaluate a trained model: `python -m t2i.evaluate MODEL --suite shapes` prints metrics as JSON.

MODEL is a saved model directory (a run's `model/`) or a run directory. The shapes suite
scores a held-back test set of the shapes world (data seed 1000, never used for training):
- every model: its loss terms averaged over the test set (for the VAEs the test ELBO in nats
  per image and bits per dim; for priors over codes the test cross-entropy);
- latent-variable models (`kl_per_dim`): the mean KL of each latent dimension and the number
  of active dimensions (mean KL above 0.01 nats);
- image tokenizers: PSNR, the judge's prompt fidelity on originals and on reconstructions,
  and the codebook usage and perplexity of each level;
- CLIP models: zero-shot attribute accuracy on one-object images, text -> image recall@1
  and @5 among two-object images, and, when the run held attribute combinations out of
  training (its config.yaml's data.holdout), zero-shot accuracy on those beside seen ones;
- text-conditioned models (`generate`, or a caption-conditioned prior over codes): the judge's
  prompt fidelity on one-object prompts and on two-object prompts, with per-attribute
  accuracies.
A prior over codes is scored through its tokenizer: `--tokenizer PATH`, or by default the
`data.tokenizer` of the run's config.yaml.

MODEL may also be a saved pipeline (a directory with model_index.json, e.g. the shipped
default): its prompt fidelity, `--images-per-prompt` images for each of `--n` test prompts,
on one-object prompts, two-object relation prompts and (when its prior's training held
attribute combinations out) one-object prompts of those combinations; each under four
settings: plain sampling, classifier-free guidance, CLIP reranking, and both. With the
unCLIP route, the same prompts through it, the diffusion prior's image embeddings against
the text embeddings (cosine to the true image embedding), and the judge's agreement of
variations with their source image.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from t2i.data.shapes import ShapesDataset, attributes, make_sample, render_spec, to_tensor
from t2i.data.text import CaptionCollator
from t2i.data.tokens import TokenDataset, encode_dataset
from t2i.evaluation import judge_many, reconstruction_report
from t2i.evaluation.zero_shot import relation_accuracy, retrieval_recall, zero_shot_accuracy
from t2i.models import TOKEN_PRIORS, CLIPModel, ImageTokenizer, load_model

logger = logging.getLogger("t2i.evaluate")

TEST_SEED = 1000  # the shapes test split; training configs use seeds 0 (train) and 1 (val)
ACTIVE_KL = 0.01  # nats: a latent dimension with more mean KL than this is "active"


def _loader(data: Any, batch_size: int, context_length: int = 32) -> DataLoader:
    """Batches of a data set, captions tokenised to `context_length`."""
    return DataLoader(data, batch_size=batch_size, collate_fn=CaptionCollator(context_length))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def loss_terms(model: torch.nn.Module, loader: DataLoader, seed: int = 0) -> dict[str, float]:
    """The model's `training_losses` terms averaged over a data set, in eval mode."""
    device = _device(model)
    torch.manual_seed(seed)
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for batch in loader:
        n = len(batch["caption"])
        for k, v in model.training_losses(send_to_device(batch, device)).items():
            if v.numel() == 1:
                sums[k] += v.item() * n
        count += n
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def latent_usage(model: torch.nn.Module, loader: DataLoader) -> dict[str, Any]:
    """Mean KL per latent dimension over a data set and the count of active dimensions."""
    device = _device(model)
    total, count = None, 0
    for batch in loader:
        kl = model.kl_per_dim(batch["pixel_values"].to(device)).float().sum(0)  # (D,)
        total = kl if total is None else total + kl
        count += batch["pixel_values"].shape[0]
    per_dim = (total / count).cpu()
    return {
        "kl_per_dim": [round(v, 4) for v in per_dim.tolist()],
        "active_dims": int((per_dim > ACTIVE_KL).sum()),
        "latent_dims": per_dim.numel(),
    }


@torch.no_grad()
def fidelity(
    generate: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    loader: DataLoader,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """The judge's prompt fidelity of images generated from the test captions.

    Args:
        generate: (input_ids on `device`, generator) -> images (N, 3, H, W) in [-1, 1].
        loader: test batches with `input_ids` and `spec`.
        device: where generation runs.
        seed: seeds the generator.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    images, specs = [], []
    for batch in loader:
        images.extend(generate(batch["input_ids"].to(device), generator).float().cpu())
        specs.extend(batch["spec"])
    return judge_many(images, specs)


def _text_fidelity(
    model: torch.nn.Module,
    generate: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    n: int,
    batch_size: int,
    seed: int,
    size: int,
) -> dict[str, Any]:
    """Fidelity on one-object and on two-object test prompts at image side `size`."""
    context = getattr(model.config, "context_length", 32)
    results = {}
    for name, k in (("one_object", 1), ("two_objects", 2)):
        prompts = ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=k)
        loader = _loader(prompts, batch_size, context)
        results[f"fidelity_{name}"] = fidelity(generate, loader, _device(model), seed)
    return results


def evaluate_prior(
    prior: torch.nn.Module,
    tokenizer: ImageTokenizer,
    n: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """A prior over codes: test cross-entropy on the tokenizer's codes of the test set, and,
    when caption-conditioned, the fidelity of its samples decoded by the tokenizer.

    Args:
        prior: a model of `TOKEN_PRIORS`.
        tokenizer: the tokenizer whose codes it models.
        n: test images per measurement.
        batch_size: images per forward pass.
        seed: seeds sampling noise.
    """
    prior.eval()
    tokenizer.eval().to(_device(prior))
    size = tokenizer.config.image_size
    images = ShapesDataset(n=n, seed=TEST_SEED, size=size)
    codes = TokenDataset(encode_dataset(images, tokenizer.encode, batch_size, _device(prior)))
    context = prior.config.get("context_length", 32)
    results: dict[str, Any] = {
        "test_images": n,
        "loss_terms": loss_terms(prior, _loader(codes, batch_size, context), seed),
    }
    if prior.config.get("text_width", 0):

        def generate(ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return tokenizer.decode(prior.sample(len(ids), input_ids=ids, generator=generator))

        results.update(_text_fidelity(prior, generate, n, batch_size, seed, size))
    return results


def _one_object_set(
    size: int, n: int, holdout: list | None = None, split: str = "train"
) -> tuple[torch.Tensor, list[dict]]:
    """n one-object test images (N, 3, S, S) and the full attributes of each object."""
    samples = [make_sample(i, TEST_SEED, size, 1, holdout, split) for i in range(n)]
    images = torch.stack([to_tensor(s["image"]) for s in samples])
    return images, [attributes(s["layout"][0]) for s in samples]


@torch.no_grad()
def evaluate_clip(
    clip: torch.nn.Module, n: int = 1000, batch_size: int = 100, holdout: list | None = None
) -> dict[str, Any]:
    """A CLIP model: zero-shot color, shape, size and cell accuracy on one-object images,
    text -> image recall@1 and @5 among two-object images, relation accuracy (share of
    two-object images scoring their caption above its relation-reversed twin), and with
    `holdout`, zero-shot accuracy on held-out attribute combinations beside that on seen ones.

    Args:
        clip: a `CLIPModel`.
        n: test images per measurement.
        batch_size: images per forward pass.
        holdout: the combinations the model was trained without (its run's data.holdout).
    """
    clip.eval()
    size = min(clip.config.image_size, 64)  # larger CLIPs read 64-pixel scenes upsampled
    images, attrs = _one_object_set(size, n)
    two = [make_sample(i, TEST_SEED, size, 2) for i in range(n)]
    two_images = torch.stack([to_tensor(s["image"]) for s in two])
    results: dict[str, Any] = {
        "test_images": n,
        "zero_shot": zero_shot_accuracy(clip, images, attrs, batch_size),
        "retrieval": retrieval_recall(
            clip, two_images, [s["caption"] for s in two], (1, 5), batch_size
        ),
        "relation_accuracy": relation_accuracy(
            clip, two_images, [s["caption"] for s in two], batch_size
        ),
    }
    if holdout:
        seen = zero_shot_accuracy(clip, *_one_object_set(size, n, holdout, "train"), batch_size)
        unseen = zero_shot_accuracy(clip, *_one_object_set(size, n, holdout, "holdout"), batch_size)
        gap = {k: seen[k] - unseen[k] for k in seen}
        results["holdout"] = {"combinations": holdout, "seen": seen, "unseen": unseen, "gap": gap}
    return results


def evaluate_shapes(
    model: torch.nn.Module, n: int = 1000, batch_size: int = 100, seed: int = 0
) -> dict[str, Any]:
    """The shapes suite (see the module docstring) for one model that reads images.

    Args:
        model: a t2i model, in any mode (it is put in eval mode).
        n: test images per measurement.
        batch_size: images per forward pass.
        seed: seeds sampling noise, so two evaluations agree.
    """
    model.eval()
    size = getattr(model.config, "image_size", 32)
    context = getattr(model.config, "context_length", 32)
    test = _loader(ShapesDataset(n=n, seed=TEST_SEED, size=size), batch_size, context)
    results: dict[str, Any] = {"test_images": n, "loss_terms": loss_terms(model, test, seed)}
    if isinstance(model, ImageTokenizer):
        results["reconstruction"] = reconstruction_report(model, test)
    if hasattr(model, "kl_per_dim"):
        results["latents"] = latent_usage(model, test)
    if hasattr(model, "generate"):
        generate = lambda ids, g: model.generate(ids, generator=g)  # noqa: E731
        results.update(_text_fidelity(model, generate, n, batch_size, seed, size))
    return results


PIPELINE_SETTINGS: dict[str, dict[str, Any]] = {  # rerank: candidates drawn per image kept
    "plain": dict(guidance_scale=1.0, temperature=1.0),
    "guidance": dict(guidance_scale=3.0, temperature=1.0),
    "rerank": dict(guidance_scale=1.0, temperature=1.0, rerank=4),
    "guidance_rerank": dict(guidance_scale=3.0, temperature=1.0, rerank=4),
    "defaults": {},  # the sampling settings the pipeline records (`sampling_defaults`)
    "defaults_rerank": dict(rerank=4),
}
UNCLIP_SETTINGS: dict[str, dict[str, Any]] = {  # added for a pipeline with the unCLIP route
    "unclip_plain": dict(
        route="unclip",
        guidance_scale=1.0,
        temperature=1.0,
        prior_guidance_scale=1.0,
        prior_candidates=1,
    ),
    "unclip_guidance": dict(
        route="unclip",
        guidance_scale=3.0,
        temperature=1.0,
        prior_guidance_scale=4.0,
        prior_candidates=1,
    ),
    "unclip_defaults": dict(route="unclip"),  # the recorded settings, decoder's and prior's
    "unclip_defaults_rerank": dict(route="unclip", rerank=4),
}


def pipeline_prompt_sets(
    size: int, n: int, holdout: list | None = None
) -> dict[str, tuple[list[str], list[dict]]]:
    """Test captions and specs: one-object, two-object (relation) and held-out combinations."""
    sets = _test_sets(size, n, holdout)
    out = {}
    for name, data in sets.items():
        samples = [data[i] for i in range(n)]
        out[name] = ([s["caption"] for s in samples], [s["spec"] for s in samples])
    return out


@torch.no_grad()
def evaluate_pipeline(
    pipe: Any,
    n: int = 200,
    images_per_prompt: int = 4,
    batch_size: int = 50,
    seed: int = 0,
    holdout: list | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A text-to-image pipeline's prompt fidelity under each sampling setting.

    Args:
        pipe: a `TextToImagePipeline`.
        n: test prompts per prompt set.
        images_per_prompt: images judged per prompt.
        batch_size: prompts per pipeline call.
        seed: seeds each setting's generator.
        holdout: the combinations its prior never saw in training.
        settings: name -> pipeline keyword arguments (default `PIPELINE_SETTINGS`, and
            `UNCLIP_SETTINGS` when the pipeline has the unCLIP route; a `rerank` there is
            the candidates drawn per kept image; an unnamed guidance scale or temperature
            is the pipeline's recorded default).

    Each setting also reports its wall time and the images per second it returned.
    """
    pipe.set_progress_bar_config(disable=True)
    size = pipe.image_tokenizer.config.image_size
    sets = pipeline_prompt_sets(size, n, holdout)
    results: dict[str, Any] = {"prompts": n, "images_per_prompt": images_per_prompt}
    if settings is None:
        settings = {**PIPELINE_SETTINGS, **(UNCLIP_SETTINGS if pipe.has_unclip else {})}
    for name, kwargs in settings.items():
        kwargs = dict(kwargs)
        if kwargs.get("rerank"):
            kwargs["rerank"] *= images_per_prompt
        results[name] = {"settings": kwargs}
        start = time.perf_counter()
        for set_name, (captions, specs) in sets.items():
            generator = torch.Generator().manual_seed(seed)
            images = []
            for i in range(0, n, batch_size):
                out = pipe(
                    captions[i : i + batch_size],
                    num_images_per_prompt=images_per_prompt,
                    generator=generator,
                    output_type="pt",
                    **kwargs,
                )
                images.extend(out.images * 2 - 1)
            repeated = [spec for spec in specs for _ in range(images_per_prompt)]
            results[name][set_name] = judge_many(images, repeated)
        seconds = time.perf_counter() - start  # sampling and judging; judging is ~1 ms/image
        results[name]["seconds"] = seconds
        results[name]["images_per_s"] = len(sets) * n * images_per_prompt / seconds
        logger.info("pipeline %s: %s", name, {k: v for k, v in results[name].items()})
    return results


def _test_sets(size: int, n: int, holdout: list | None) -> dict[str, ShapesDataset]:
    """The test images of the pipeline prompt sets (the same captions and specs)."""
    sets = {
        "one_object": ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=1),
        "two_objects": ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=2),
    }
    if holdout:
        sets["holdout"] = ShapesDataset(
            n=n, seed=TEST_SEED, size=size, num_objects=1, holdout=holdout, split="holdout"
        )
    return sets


@torch.no_grad()
def evaluate_unclip(
    pipe: Any,
    n: int = 200,
    variations: int = 4,
    batch_size: int = 50,
    seed: int = 0,
    holdout: list | None = None,
    prior_guidance_scale: float | None = None,
    guidance_scale: float | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The unCLIP route's own measures on test images of the shapes world.

    - embeddings, per prompt set: the mean cosine between the true CLIP image embedding of
      a test image and (a) the diffusion prior's embedding for its caption, (b) the
      caption's text embedding; the prior should land closer than the text does;
    - variations of one-object test images (`variations` each, the image's own CLIP
      embedding decoded): the judge's agreement with the source image's spec.

    Args:
        pipe: a `TextToImagePipeline` with the unCLIP route.
        n: test images per prompt set.
        variations: variations judged per source image.
        batch_size: images per call.
        seed: seeds the generator.
        holdout: the combinations its stages never saw in training.
        prior_guidance_scale: guidance of the diffusion prior.
        guidance_scale: guidance of the decoder.
        temperature: temperature of the decoder (these three: None is the pipeline's
            recorded setting, what `pipe(route="unclip")` and `pipe.variations` use).
    """
    pipe.set_progress_bar_config(disable=True)
    prior_scale = pipe.recorded("prior_guidance_scale", prior_guidance_scale)
    sets = _test_sets(pipe.image_tokenizer.config.image_size, n, holdout)
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, Any] = {"embeddings": {}}
    for name, data in sets.items():
        prior_cos, text_cos, other_cos = [], [], []
        for batch in _loader(data, batch_size, pipe.clip.config.context_length):
            true = pipe.clip.encode_image(batch["pixel_values"].to(pipe.device)).float()
            start = len(other_cos) * batch_size  # this batch's first sample in the set
            other = another_image(batch["spec"], batch["pixel_values"].shape[-1], start)
            other_cos.append((pipe.clip.encode_image(other.to(pipe.device)) * true).sum(-1).cpu())
            text = pipe.clip.text_features(batch["input_ids"].to(pipe.device))
            drawn = pipe.diffusion_prior.sample(
                text.embeds,
                text.states,
                prior_scale,
                num_inference_steps=pipe.recorded("num_inference_steps"),
                generator=generator,
                num_candidates=pipe.recorded("prior_candidates"),
            )
            prior_cos.append((drawn * true).sum(-1).cpu())
            text_cos.append((text.embeds.float() * true).sum(-1).cpu())
        prior_c, text_c = torch.cat(prior_cos), torch.cat(text_cos)
        results["embeddings"][name] = {
            "cosine_prior_to_image": prior_c.mean().item(),
            "cosine_text_to_image": text_c.mean().item(),
            "prior_closer": (prior_c > text_c).float().mean().item(),
            # what a perfect prior lands at: an image that fits the caption, not this one
            "cosine_another_image_to_image": torch.cat(other_cos).float().mean().item(),
        }
    results["variations"] = variation_agreement(
        pipe, sets["one_object"], variations, batch_size, guidance_scale, generator, temperature
    )
    return results


def another_image(specs: list[dict], size: int, start: int) -> torch.Tensor:
    """Another image (N, 3, S, S) of each spec: what its caption states, the rest (size,
    cell, layout) drawn anew, seeded by the sample's place in its set."""
    return torch.stack(
        [to_tensor(render_spec(spec, size, seed=start + i)) for i, spec in enumerate(specs)]
    )


@torch.no_grad()
def variation_agreement(
    pipe: Any,
    data: ShapesDataset,
    variations: int = 4,
    batch_size: int = 50,
    guidance_scale: float | None = 3.0,
    generator: torch.Generator | None = None,
    temperature: float | None = 1.0,
) -> dict[str, Any]:
    """Decode each test image's own CLIP image embedding `variations` times (unCLIP's
    variations) and return the judge's agreement with the image's spec, and the decoding
    speed (`images_per_s`, the CLIP image encoder included). A guidance_scale or temperature
    of None is the pipeline's recorded one."""
    images, specs = [], []
    start = time.perf_counter()
    for batch in _loader(data, batch_size, pipe.clip.config.context_length):
        embeds = pipe.clip.encode_image(batch["pixel_values"].to(pipe.device))
        sampling = (guidance_scale, temperature, None, None, generator)
        images.extend(pipe.decode_embeddings(embeds.repeat_interleave(variations, 0), *sampling))
        specs += [spec for spec in batch["spec"] for _ in range(variations)]
    seconds = time.perf_counter() - start
    return {
        "per_image": variations,
        **judge_many(images, specs),
        "images_per_s": len(images) / seconds,
    }


def run_data(model_path: str) -> dict:
    """The data section of the run config.yaml beside a saved model ({} when there is none)."""
    for config in (Path(model_path) / "config.yaml", Path(model_path).parent / "config.yaml"):
        if config.is_file():
            return yaml.safe_load(config.read_text()).get("data") or {}
    return {}


def run_tokenizer(model_path: str, tokenizer: str | None) -> str:
    """The tokenizer of a prior: as given, else the `data.tokenizer` of the run's config.yaml."""
    found = tokenizer or run_data(model_path).get("tokenizer")
    if not found:
        raise FileNotFoundError(
            f"{model_path} is a prior over codes; pass --tokenizer (no run config.yaml names one)"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m t2i.evaluate MODEL --suite shapes [--n N] [--out FILE]`."""
    parser = argparse.ArgumentParser(
        prog="python -m t2i.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a saved model directory or a run directory")
    parser.add_argument("--suite", choices=["shapes"], default="shapes")
    parser.add_argument("--n", type=int, default=1000, help="test images per measurement")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="a prior's tokenizer (default: from its run config)")
    parser.add_argument(
        "--images-per-prompt", type=int, default=4, help="a pipeline's images per test prompt"
    )
    every = [*PIPELINE_SETTINGS, *UNCLIP_SETTINGS]
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=every,
        metavar="NAME",
        help=f"a pipeline's sampling settings to score (default: all it has): {', '.join(every)}",
    )
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = dict(n=args.n, batch_size=args.batch_size, seed=args.seed)
    try:
        if (Path(args.model) / "model_index.json").is_file():
            from t2i.pipelines import load_pipeline

            holdout = run_data(str(Path(args.model) / "prior")).get("holdout") or None
            pipe = load_pipeline(args.model, device)
            ipp = args.images_per_prompt
            named = args.settings or []  # none named: every setting the pipeline has
            unclip = [n for n in named if n in UNCLIP_SETTINGS]
            if unclip and not pipe.has_unclip:
                raise ValueError(f"--settings {unclip[0]}: {args.model} has no unCLIP route")
            every = {**PIPELINE_SETTINGS, **UNCLIP_SETTINGS}
            settings = {n: every[n] for n in named} or None
            results = evaluate_pipeline(
                pipe, args.n, ipp, args.batch_size, args.seed, holdout, settings
            )
            if pipe.has_unclip and (not named or unclip):
                results["unclip"] = evaluate_unclip(
                    pipe, args.n, ipp, args.batch_size, args.seed, holdout
                )
            return _report(args, results)
        model = load_model(args.model).to(device)
        if isinstance(model, TOKEN_PRIORS):
            tokenizer = load_model(run_tokenizer(args.model, args.tokenizer))
            results = evaluate_prior(model, tokenizer, **common)
        elif isinstance(model, CLIPModel):
            holdout = run_data(args.model).get("holdout") or None
            results = evaluate_clip(model, args.n, args.batch_size, holdout)
        else:
            results = evaluate_shapes(model, **common)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _report(args, results)


def _report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    """Print the results as JSON (and write them to --out)."""
    text = json.dumps({"model": str(args.model), "suite": args.suite, **results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
