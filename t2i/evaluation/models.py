"""The shapes suite for one trained model, on a held-back test set of the shapes world (data
seed 1000, never used for training). What is measured follows what the model reads and
can do, not its family:
- every model: its loss terms averaged over the test set, the inputs it reads prepared as
  in training (`t2i.training.inputs`: codes, CLIP states and embeddings);
- latent-variable models (`kl_per_dim`): the mean KL of each latent dimension and the number
  of active dimensions;
- image tokenizers and latent autoencoders: PSNR, the judge's fidelity on originals and
  reconstructions, and a tokenizer's codebook usage and perplexity of each level;
- CLIP models (`evaluate_clip`): zero-shot attribute accuracy, retrieval, relation accuracy,
  and held-out combinations;
- models that draw images for a caption or an image embedding (a CVAE, a prior over codes,
  unCLIP's decoders): the judge's prompt fidelity of their samples on one-object and
  two-object test sets, with per-attribute accuracies.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from t2i.data.shapes import ShapesDataset, attributes, make_sample, to_tensor
from t2i.data.text import CaptionCollator
from t2i.evaluation.judge import judge_many
from t2i.evaluation.reconstruction import reconstruction_report
from t2i.evaluation.zero_shot import relation_accuracy, retrieval_recall, zero_shot_accuracy
from t2i.models import ImageTokenizer, LatentAutoencoder
from t2i.training.inputs import prepare, reads_caption, samples_are_judged

TEST_SEED = 1000  # the shapes test split; training configs use seeds 0 (train) and 1 (val)
ACTIVE_KL = 0.01  # nats: a latent dimension with more mean KL than this is "active"

Transform = Callable[[dict], dict] | None


def loader(
    data: Any, batch_size: int, context_length: int = 32, tokenizer: Any = None
) -> DataLoader:
    """Batches of a data set, captions tokenised to `context_length` (by `tokenizer`, a CLIP's,
    when given; else open_clip's BPE)."""
    collate = CaptionCollator(context_length, tokenizer=tokenizer)
    return DataLoader(data, batch_size=batch_size, collate_fn=collate)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on_device(batch: dict, device: torch.device, transform: Transform) -> dict:
    """A batch on the model's device, with what the model reads added."""
    batch = send_to_device(batch, device)
    return transform(batch) if transform is not None else batch


@torch.no_grad()
def loss_terms(
    model: torch.nn.Module, batches: DataLoader, seed: int = 0, transform: Transform = None
) -> dict[str, float]:
    """The model's `training_losses` terms averaged over a data set, in eval mode."""
    device = _device(model)
    torch.manual_seed(seed)
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for batch in batches:
        n = len(batch["caption"])
        for k, v in model.training_losses(_on_device(batch, device, transform)).items():
            if v.numel() == 1:
                sums[k] += v.item() * n
        count += n
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def latent_usage(model: torch.nn.Module, batches: DataLoader) -> dict[str, Any]:
    """Mean KL per latent dimension over a data set and the count of active dimensions."""
    device = _device(model)
    total, count = None, 0
    for batch in batches:
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
    generate: Callable[[dict, torch.Generator], torch.Tensor],
    batches: DataLoader,
    device: torch.device,
    seed: int = 0,
    transform: Transform = None,
) -> dict[str, float]:
    """The judge's prompt fidelity of images generated for the test batches.

    Args:
        generate: (batch on `device`, generator) -> images (N, 3, H, W) in [-1, 1].
        batches: test batches with `input_ids` and `spec`.
        device: where generation runs.
        seed: seeds the generator.
        transform: adds what the model reads to each batch.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    images, specs = [], []
    for batch in batches:
        batch = _on_device(batch, device, transform)
        images.extend(generate(batch, generator).float().cpu())
        specs.extend(batch["spec"])
    return judge_many(images, specs)


def sampler(
    model: torch.nn.Module, decode: Callable | None
) -> Callable[[dict, torch.Generator], torch.Tensor]:
    """batch, generator -> the model's images for the batch's captions (or embeddings): its
    `generate` from caption tokens, else the samples of its `log_images`, decoded when they
    are codes."""
    if hasattr(model, "generate"):
        return lambda batch, g: model.generate(batch["input_ids"], generator=g)

    def draw(batch: dict, generator: torch.Generator) -> torch.Tensor:
        samples = model.log_images(batch, generator=generator)["samples"]
        return decode(samples) if decode is not None else samples

    return draw


def evaluate_model(
    model: torch.nn.Module,
    readers: dict[str, Any] | None = None,
    n: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """The shapes suite (see the module docstring) for any model but CLIP.

    Args:
        model: a t2i model, in any mode (it is put in eval mode).
        readers: the frozen models preparing what it reads (`tokenizer`, `clip`), as its
            run's data section names them.
        n: test images per measurement.
        batch_size: images per forward pass.
        seed: seeds sampling noise, so two evaluations agree.
    """
    model.eval()
    readers = {k: v.eval().to(_device(model)) for k, v in (readers or {}).items()}
    size = _image_size(model, readers)
    context = _context_length(model, readers)
    reads_states = model.reads & {"text_states", "text_embeds"} and "clip" in readers
    tokenizer = readers["clip"].tokenizer if reads_states else None  # else open_clip's BPE
    with tempfile.TemporaryDirectory() as cache:

        def prepared(data: ShapesDataset):
            return prepare(model.reads, data, data, cache, **readers)

        test = ShapesDataset(n=n, seed=TEST_SEED, size=size)
        inputs = prepared(test)
        results: dict[str, Any] = {
            "test_images": n,
            "loss_terms": loss_terms(
                model,
                loader(inputs.train_set, batch_size, context, tokenizer),
                seed,
                inputs.batch_transform,
            ),
        }
        pixels = loader(test, batch_size, context)
        if isinstance(model, (ImageTokenizer, LatentAutoencoder)):
            results["reconstruction"] = reconstruction_report(model, pixels)
        if hasattr(model, "kl_per_dim"):
            results["latents"] = latent_usage(model, pixels)
        if hasattr(model, "generate") or samples_are_judged(model.reads):
            draw = sampler(model, inputs.decode_tokens)
            for name, k in (("one_object", 1), ("two_objects", 2)):
                data = prepared(ShapesDataset(n=n, seed=TEST_SEED, size=size, num_objects=k))
                results[f"fidelity_{name}"] = fidelity(
                    draw,
                    loader(data.train_set, batch_size, context),
                    _device(model),
                    seed,
                    data.batch_transform,
                )
    return results


def evaluate_shapes(
    model: torch.nn.Module, n: int = 1000, batch_size: int = 100, seed: int = 0
) -> dict[str, Any]:
    """The shapes suite for a model that reads only images and captions (no other model's
    outputs): `evaluate_model` without readers."""
    return evaluate_model(model, None, n, batch_size, seed)


def _image_size(model: torch.nn.Module, readers: dict[str, Any]) -> int:
    """The test images' side: the tokenizer's or autoencoder's, else the model's own, else 32."""
    for key in ("tokenizer", "autoencoder"):
        if key in readers:
            return readers[key].image_size
    return getattr(model, "image_size", None) or model.config.get("image_size", 32)


def _context_length(model: torch.nn.Module, readers: dict[str, Any]) -> int:
    """The caption length: the model's when it reads captions, else CLIP's, else 32."""
    if reads_caption(model.reads) and "context_length" in model.config:
        return model.config.context_length
    return readers["clip"].config.context_length if "clip" in readers else 32


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
