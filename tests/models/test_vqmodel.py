"""A diffusers VQModel folder (LDM's VQ autoencoders, aMUSEd's layout) as an image tokenizer:
its codes decode to what the VQModel itself reconstructs, it trains by the VQ-VAE objective,
and saves and loads as a t2i model with the same codes."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_vqmodel
from diffusers import VQModel
from model_checks import assert_one_step_trains

from t2i.models import load_model
from t2i.models.vqmodel import VQModelTokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny VQModel (f4, 32 codes of 4 channels), seeded, saved as diffusers saves it."""
    return save_tiny_vqmodel(tmp_path_factory.mktemp("vqmodel"))


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_codes_decode_to_the_vqmodels_own_reconstruction(folder):
    tokenizer = VQModelTokenizer.from_diffusers(str(folder), 16).eval()
    reference = VQModel.from_pretrained(folder).eval()
    codes = tokenizer.encode(images())
    assert codes.shape == (4, 4, 4) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < tokenizer.num_tokens == 32
    with torch.no_grad():
        assert torch.allclose(tokenizer.decode(codes), reference(images()).sample, atol=1e-4)


def test_one_step_trains_and_the_loss_has_its_terms(folder):
    tokenizer = VQModelTokenizer.from_diffusers(str(folder), 16).train()
    losses = tokenizer.training_losses({"pixel_values": images()})
    assert torch.allclose(losses["loss"], losses["recon"] + losses["vq"])
    assert 1.0 <= float(losses["perplexity"]) <= 32.0
    assert_one_step_trains(tokenizer, {"pixel_values": images(8)})


def test_save_load_gives_the_same_codes_and_a_bad_size_is_named(folder, tmp_path):
    tokenizer = VQModelTokenizer.from_diffusers(str(folder), 16).eval()
    tokenizer.save_pretrained(tmp_path / "t")
    again = load_model(tmp_path / "t").eval()
    assert isinstance(again, VQModelTokenizer)
    assert torch.equal(again.encode(images()), tokenizer.encode(images()))
    with pytest.raises(ValueError, match="image_size=18 must halve 2 times"):
        VQModelTokenizer.from_diffusers(str(folder), 18)
