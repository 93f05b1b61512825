"""scripts/with_maskgit.py: a bundle with its masked route's prior taken from a run."""

from __future__ import annotations

import torch
from conftest import load_script, tiny_pipeline
from safetensors.torch import load_file

from t2i.models import MaskGITPrior
from t2i.pipelines import TextToImagePipeline

with_maskgit = load_script("with_maskgit")


def masked(num_tokens: int = 32, seed: int = 5) -> MaskGITPrior:
    torch.manual_seed(seed)
    kw = dict(grid_sizes=[4], context_length=32, clip_width=32, dim=32, depth=1, heads=2)
    return MaskGITPrior(num_tokens=num_tokens, **kw)


def test_the_route_is_added_and_the_rest_is_kept_bit_for_bit(tmp_path, capsys):
    base = tiny_pipeline()
    base.sampling_defaults.update(guidance_scale=1.5)
    base.save_pretrained(tmp_path / "base")
    prior = masked()
    prior.save_pretrained(tmp_path / "mg")
    args = [str(tmp_path / p) for p in ("base", "mg", "out")]
    assert with_maskgit.main([*args, "--set", "maskgit_num_inference_steps=6"]) == 0
    out = TextToImagePipeline.from_pretrained(tmp_path / "out")
    assert out.routes == ["dalle", "maskgit"]
    stored = load_file(
        str(tmp_path / "out" / "masked_prior" / "diffusion_pytorch_model.safetensors")
    )
    assert {t.dtype for t in stored.values()} == {torch.float16}
    for (name, p), q in zip(out.masked_prior.named_parameters(), prior.parameters(), strict=True):
        assert torch.equal(p, q.half().to(p.dtype)), name
    for name in ("prior", "clip", "image_tokenizer"):  # the bundle's, as saved
        before = load_file(str(tmp_path / "base" / name / "diffusion_pytorch_model.safetensors"))
        after = load_file(str(tmp_path / "out" / name / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(before[k].half(), after[k]) for k in before), name
    assert out.sampling_defaults["guidance_scale"] == 1.5
    assert out.sampling_defaults["maskgit_num_inference_steps"] == 6

    capsys.readouterr()
    assert with_maskgit.main(args) == 2  # never over an earlier bundle
    assert "exists" in capsys.readouterr().err
    masked(num_tokens=64).save_pretrained(tmp_path / "wide")
    assert with_maskgit.main([args[0], str(tmp_path / "wide"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "draws 64 codes" in err and not (tmp_path / "o2").exists()
