"""The latent diffusion route's models: the KL autoencoder, a VQ-VAE's pre-quantisation
latents, and the cross-attention denoiser."""

from __future__ import annotations

import ldm_tiny
import pytest
import torch
from model_checks import assert_one_step_trains

from t2i.models import VQVAE, KLAutoencoder, LatentDenoiser, VQLatents, load_model


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def states(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_autoencoder_maps_images_to_a_latent_grid_and_back():
    torch.manual_seed(0)
    vae = KLAutoencoder(**ldm_tiny.AUTOENCODER).eval()
    z = vae.encode(images())
    assert z.shape == (4, 4, 8, 8) and vae.latent_size == 8
    assert vae.decode(z).shape == (4, 3, 16, 16)
    sampled = vae.encode(images(), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(sampled, z)  # a posterior draw, not its mean


def test_the_saved_scaling_factor_is_one_over_the_data_latent_std(tmp_path):
    torch.manual_seed(0)
    vae = KLAutoencoder(**ldm_tiny.AUTOENCODER).train()
    for seed in range(200):  # the running estimate converges on the latents' std
        vae.training_losses({"pixel_values": images(8, seed)})
    with torch.no_grad():
        unscaled = vae.vae.encode(images(64, 999)).latent_dist.mean
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_model(tmp_path / "vae")
    assert loaded.config.scaling_factor == pytest.approx(1 / unscaled.std().item(), rel=0.1)
    scaled = loaded.eval().encode(images(64, 999))
    assert scaled.std().item() == pytest.approx(1.0, rel=0.1)  # unit variance for the denoiser


def test_vq_latents_are_the_scaled_encoder_output_and_decode_through_the_codebook(tmp_path):
    torch.manual_seed(0)
    vq = VQVAE(image_size=16, channels=(8, 16), num_res_blocks=1, embed_dim=4, codebook_size=16)
    vq.eval()
    auto = VQLatents.from_vqvae(vq, [images(16, s) for s in range(4)])
    z = auto.encode(images(16, 99))
    assert z.shape == (16, 4, 4, 4) and auto.latent_channels == 4 and auto.latent_size == 4
    assert z.std().item() == pytest.approx(1.0, rel=0.15)  # unit variance for the denoiser
    with torch.no_grad():
        through_codes = vq.decode(vq.encode(images(16, 99)))
        assert torch.allclose(auto.decode(z), through_codes, atol=1e-5)  # snapped to codes
        codes = vq.quantizer.lookup(vq.encode(images(16, 99))) * auto.scaling_factor
        assert not torch.allclose(codes, z, atol=1e-2)  # other latents, the same nearest codes
        assert torch.allclose(auto.decode(codes), through_codes, atol=1e-5)
    auto.save_pretrained(tmp_path / "vq_latents")
    loaded = load_model(tmp_path / "vq_latents").eval()
    assert loaded.scaling_factor == auto.scaling_factor
    assert torch.equal(loaded.encode(images(2, 5)), auto.encode(images(2, 5)))


def test_one_step_of_each_model_trains():
    torch.manual_seed(0)
    assert_one_step_trains(KLAutoencoder(**ldm_tiny.AUTOENCODER), {"pixel_values": images()})
    vq = dict(image_size=16, channels=(8, 16), num_res_blocks=1, embed_dim=4, codebook_size=16)
    assert_one_step_trains(VQLatents(vqvae=vq), {"pixel_values": images()})
    batch = {"latents": torch.randn(4, 4, 8, 8), "text_states": states()}
    for options in ({}, {"prediction_type": "v_prediction", "snr_gamma": 5.0, "noise_offset": 0.1}):
        torch.manual_seed(0)
        assert_one_step_trains(LatentDenoiser(**ldm_tiny.DENOISER, **options), batch)
    assert_one_step_trains(LatentDenoiser(**ldm_tiny.TRANSFORMER), batch)


@pytest.mark.parametrize("backbone", ldm_tiny.BACKBONES)
def test_the_denoising_loss_falls_on_a_tiny_set(backbone):
    torch.manual_seed(0)
    model = LatentDenoiser(**ldm_tiny.BACKBONES[backbone]).train()
    batch = {"latents": torch.randn(8, 4, 8, 8), "text_states": states(8)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = model.training_losses(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


@pytest.mark.parametrize("backbone", ldm_tiny.BACKBONES)
def test_the_cross_attention_reads_the_caption(backbone):
    torch.manual_seed(0)
    model = LatentDenoiser(**ldm_tiny.BACKBONES[backbone]).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 50])
    with torch.no_grad():
        a = model(x, t, states(2, 0))
        b = model(x, t, states(2, 1))
        zeroed = model(x, t, torch.zeros(2, 32, 32))
    assert not torch.allclose(a, b, atol=1e-4)  # another caption, another prediction
    assert not torch.allclose(a, zeroed, atol=1e-4)  # zeroed states change it too


def test_pooled_text_adds_the_caption_to_the_timestep_embedding():
    torch.manual_seed(0)
    model = LatentDenoiser(**ldm_tiny.DENOISER, pooled_text=True).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 50])
    with torch.no_grad():
        a = model(x, t, states(2, 0))
        model.unet.add_embedding.proj.weight.zero_()  # cut the pooled path
        model.unet.add_embedding.proj.bias.zero_()
        b = model(x, t, states(2, 0))
    assert not torch.allclose(a, b, atol=1e-5)
    assert not hasattr(LatentDenoiser(**ldm_tiny.DENOISER).unet, "add_embedding")


@pytest.mark.parametrize("backbone", ldm_tiny.BACKBONES)
def test_sampling_is_seeded_and_strength_zero_returns_the_init_latents(backbone):
    torch.manual_seed(0)
    model = LatentDenoiser(**ldm_tiny.BACKBONES[backbone]).eval()
    s = states(2)
    first = model.sample(s, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    again = model.sample(s, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert first.shape == (2, 4, 8, 8) and torch.equal(first, again)
    init = torch.randn(2, 4, 8, 8)
    kept = model.sample(s, num_inference_steps=3, init_latents=init, strength=0.0)
    assert torch.equal(kept, init)
    moved = model.sample(s, num_inference_steps=4, init_latents=init, strength=0.5)
    assert not torch.equal(moved, init)
    with pytest.raises(ValueError, match="needs uncond_states"):
        model.sample(s, guidance_scale=3.0)
