"""scripts/with_ldm.py: a bundle with its latent diffusion route taken from other runs."""

from __future__ import annotations

import ldm_tiny
import torch
from conftest import load_script, tiny_pipeline
from safetensors.torch import load_file

from t2i.pipelines import TextToImagePipeline

with_ldm = load_script("with_ldm")


def test_the_route_is_added_from_saved_models_and_the_rest_is_kept(tmp_path, capsys):
    base = tiny_pipeline()
    base.sampling_defaults.update(guidance_scale=1.5)
    base.save_pretrained(tmp_path / "base")
    parts = ldm_tiny.parts(seed=3)
    parts["vae"].save_pretrained(tmp_path / "vae")
    parts["unet"].save_pretrained(tmp_path / "unet")
    args = [str(tmp_path / p) for p in ("base", "vae", "unet", "out")]
    assert with_ldm.main([*args, "--set", "ldm_guidance_scale=4"]) == 0
    out = TextToImagePipeline.from_pretrained(tmp_path / "out")
    assert out.routes == ["dalle", "ldm"]
    stored = load_file(str(tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}  # as the shipped default
    for (name, p), q in zip(out.unet.named_parameters(), parts["unet"].parameters(), strict=True):
        assert torch.equal(p, q.half().to(p.dtype)), name
    prior, base_prior = next(out.prior.parameters()), next(base.prior.parameters())
    assert torch.equal(prior, base_prior.half().to(prior.dtype))
    assert out.sampling_defaults["guidance_scale"] == 1.5  # the bundle's, kept
    assert out.sampling_defaults["ldm_guidance_scale"] == 4

    capsys.readouterr()
    assert with_ldm.main(args) == 2  # never over an earlier bundle
    assert "exists" in capsys.readouterr().err
    vq = ldm_tiny.parts(vq=True)["vae"]  # 4 x 4 latents for an 8 x 8 denoiser
    vq.save_pretrained(tmp_path / "vq")
    assert with_ldm.main([args[0], str(tmp_path / "vq"), args[2], str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "draws 4 x 8 latents" in err and not (tmp_path / "o2").exists()
