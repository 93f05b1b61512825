"""`python -m t2i.evaluate RUN` works on every kind of run the shipped configs train: a tiny
model of each config's kind, saved as a run whose config.yaml names the tokenizer and CLIP it
read, as `python -m t2i.train` leaves it."""

from __future__ import annotations

import json
from pathlib import Path

import ldm_tiny
import pytest
import tiny
import torch
import yaml

from t2i import evaluate
from t2i.config import load_config
from t2i.models import MODELS, CLIPModel

CONFIGS = sorted(  # one model each (pipeline.yaml, the recipe, trains them all)
    p
    for p in (Path(__file__).resolve().parents[2] / "configs" / "shapes").glob("*.yaml")
    if p.name != "pipeline.yaml"
)
S = 16  # the tiny tokenizers' and models' image side
VQ = dict(image_size=S, channels=(8, 16), num_res_blocks=1, embed_dim=8, codebook_size=32)
VQ2 = {**VQ, "top_channels": (16,)}  # grids 2 x 2 (top) and 4 x 4 (bottom)
TINY: dict[str, dict] = {  # model.type (and a DALL-E prior's text_encoder) -> tiny arguments
    "vae": dict(image_size=S, latent_dim=4, channels=(8, 16)),
    "cvae": dict(image_size=S, latent_dim=4, channels=(8, 16), text_width=16, text_layers=1),
    "categorical_vae": dict(image_size=S, num_latents=6, num_classes=5, channels=(8, 16)),
    "dvae": dict(image_size=S, channels=(8, 16), num_res_blocks=1, num_tokens=32, codebook_dim=8),
    "vqvae": VQ,
    "vqvae2": VQ2,
    "pixelcnn": dict(num_tokens=32, grid_size=4, channels=8, num_layers=1, text_width=16),
    "pixelcnn_hierarchical": dict(num_tokens=32, grid_sizes=(2, 4), channels=8, num_layers=1),
    "clip": tiny.CLIP,
    "dalle_prior/clip": dict(
        num_tokens=32, grid_sizes=[4], clip_width=32, dim=32, depth=1, heads=2
    ),
    "dalle_prior/clip_image": dict(
        num_tokens=32,
        grid_sizes=[4],
        text_encoder="clip_image",
        context_length=2,
        embed_dim=16,
        dim=32,
        depth=1,
        heads=2,
    ),
    "maskgit_prior": dict(num_tokens=32, grid_sizes=[4], clip_width=32, dim=32, depth=1, heads=2),
    "diffusion_prior": dict(embed_dim=16, clip_width=32, dim=32, depth=1, heads=2),
    "autoencoder_kl": ldm_tiny.AUTOENCODER,
    "latent_diffusion": ldm_tiny.DENOISER,
    "diffusion_decoder": dict(
        image_size=S,
        embed_dim=16,
        block_out_channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_train_timesteps=100,
    ),
}


def kind(path: Path) -> str:
    """A config's kind of run: its model type, with a DALL-E prior's text encoder."""
    model = load_config(path).model
    if model["type"] == "dalle_prior":
        return f"dalle_prior/{model.get('text_encoder', 'clip')}"  # init_from: the prior's
    return model["type"]


@pytest.fixture(scope="module")
def readers(tmp_path_factory) -> dict[str, Path]:
    """A tiny VQ-VAE, VQ-VAE-2, CLIP and KL autoencoder, saved as runs."""
    root = tmp_path_factory.mktemp("readers")
    torch.manual_seed(0)
    for name, model in [
        ("vqvae", MODELS["vqvae"](**VQ)),
        ("vqvae2", MODELS["vqvae2"](**VQ2)),
        ("clip", CLIPModel(**tiny.CLIP)),
        ("autoencoder", MODELS["autoencoder_kl"](**ldm_tiny.AUTOENCODER)),
    ]:
        model.save_pretrained(root / name / "model")
    return {name: root / name for name in ("vqvae", "vqvae2", "clip", "autoencoder")}


def test_every_config_kind_has_a_tiny_model_here():
    assert {kind(p) for p in CONFIGS} <= set(TINY)  # a new kind of run needs a case below


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_evaluate_scores_a_run_of_every_shipped_config(config, readers, tmp_path, capsys):
    name = kind(config)
    torch.manual_seed(0)
    model = MODELS[name.split("/")[0]](**TINY[name])
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    data = {}  # what the run read, as train records it
    if "image_tokens" in model.reads:
        data["tokenizer"] = str(readers["vqvae2" if name == "pixelcnn_hierarchical" else "vqvae"])
    if model.reads & {"text_states", "text_embeds", "image_embeds"}:
        data["clip"] = str(readers["clip"])
    if "latents" in model.reads:
        data["autoencoder"] = str(readers["autoencoder"])
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    out = tmp_path / "eval.json"
    argv = [str(run), "--n", "4", "--batch-size", "4", "--out", str(out)]
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    if name == "clip":
        assert 0.0 <= report["relation_accuracy"] <= 1.0
        return
    assert report["test_images"] == 4
    assert torch.isfinite(torch.tensor(report["loss_terms"]["loss"]))  # read what it needs
    draws = {
        "cvae",
        "pixelcnn",
        "dalle_prior/clip",
        "dalle_prior/clip_image",
        "maskgit_prior",
        "diffusion_decoder",
        "latent_diffusion",
    }
    if name in draws:  # it draws images for a caption or an embedding: they are judged
        assert report["fidelity_one_object"]["n"] == 4
        assert report["fidelity_two_objects"]["n"] == 4
    else:
        assert "fidelity_one_object" not in report
    if name in ("dvae", "vqvae", "vqvae2"):
        assert report["reconstruction"]["psnr"] > 0


def test_a_dalle_prior_reading_clip_is_scored_with_its_runs_clip(readers, tmp_path):
    """The old evaluate decided by a key only PixelCNN has and failed with `needs
    text_states` here; the prior's declared inputs now bring its CLIP's states."""
    torch.manual_seed(0)
    prior = MODELS["dalle_prior"](**TINY["dalle_prior/clip"])
    prior.save_pretrained(tmp_path / "prior" / "model")
    runs = {"tokenizer": str(readers["vqvae"]), "clip": str(readers["clip"])}
    (tmp_path / "prior" / "config.yaml").write_text(yaml.safe_dump({"data": runs}))
    first = evaluate.evaluate_saved_model(_args(tmp_path / "prior"))
    again = evaluate.evaluate_saved_model(_args(tmp_path / "prior"))
    assert first == again  # seeded
    assert first["fidelity_one_object"]["n"] == 4
    missing = tmp_path / "bare"
    prior.save_pretrained(missing / "model")
    with pytest.raises(FileNotFoundError, match="reads tokenizer outputs; pass --tokenizer"):
        evaluate.evaluate_saved_model(_args(missing))


def _args(path: Path):
    import argparse

    return argparse.Namespace(model=str(path), n=4, batch_size=4, seed=0, tokenizer=None, clip=None)
