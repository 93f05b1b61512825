"""LoRA adapters through peft on every model that takes them: only the adapters train, an
adapted model starts as its base, scale 0 is the base exactly, fused equals unfused within
float tolerance and unfusing gives the base back bit for bit, adapters save alone and load
back, and adapters made for other base weights are refused."""

from __future__ import annotations

from pathlib import Path

import ldm_tiny
import pytest
import torch
from conftest import save_tiny_bert
from tiny import CLIP as TINY_CLIP

from t2i.models import (
    VQVAE,
    CLIPModel,
    DALLEPrior,
    DiffusionPrior,
    LatentDenoiser,
    MaskGITPrior,
    load_model,
)
from t2i.models.lora import (
    LoraError,
    LoraSpec,
    add_lora,
    base_id,
    fuse_lora,
    load_lora,
    lora_layers,
    read_lora,
    set_lora_scale,
    unfuse_lora,
)

L, W = 32, 32  # context length, CLIP width


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def text_states(n: int) -> torch.Tensor:
    return torch.randn(n, L, W, generator=g(1))


def codes(n: int) -> dict:
    return {
        "image_tokens": torch.randint(0, 32, (n, 4, 4), generator=g(2)),
        "input_ids": torch.randint(1, 90, (n, L), generator=g(3)),
        "text_states": text_states(n),
    }


PRIOR = dict(
    num_tokens=32,
    grid_sizes=[4],
    context_length=L,
    text_encoder="clip",
    clip_width=W,
    dim=32,
    depth=1,
    heads=2,
)


def clip_batch(clip: CLIPModel) -> dict:
    captions = ["a red apple", "a green face", "a cat", "a red cat"]
    return {
        "pixel_values": torch.rand(4, 3, 16, 16, generator=g(4)) * 2 - 1,
        "input_ids": clip.tokenize(captions),
    }


def make(kind: str, root: Path) -> tuple[torch.nn.Module, dict]:
    """A tiny model of `kind`, seeded, and a batch for its training loss."""
    torch.manual_seed(0)
    if kind in ("unet", "transformer"):
        model = LatentDenoiser(**ldm_tiny.BACKBONES[kind])
        return model, {
            "latents": torch.randn(4, 4, 8, 8, generator=g(5)),
            "text_states": text_states(4),
        }
    if kind == "dalle_prior":
        return DALLEPrior(**PRIOR), codes(4)
    if kind == "maskgit_prior":
        return MaskGITPrior(**PRIOR), codes(4)
    if kind == "diffusion_prior":
        model = DiffusionPrior(
            embed_dim=16,
            clip_width=W,
            context_length=L,
            dim=32,
            depth=1,
            heads=2,
            num_train_timesteps=100,
        )
        embeds = torch.nn.functional.normalize(torch.randn(4, 16, generator=g(6)), dim=-1)
        return model, {
            "image_embeds": embeds,
            "text_embeds": embeds.flip(0),
            "text_states": text_states(4),
        }
    if kind == "clip":
        clip = CLIPModel(**TINY_CLIP)
        return clip, clip_batch(clip)
    clip = CLIPModel(
        **{k: v for k, v in TINY_CLIP.items() if not k.startswith("text_")},
        text_model=str(save_tiny_bert(root / "bert", "a red green apple face cat".split(), 1)),
    )
    clip.load_pretrained_parts()
    return clip, clip_batch(clip)


KINDS = [
    "unet",
    "transformer",
    "dalle_prior",
    "maskgit_prior",
    "diffusion_prior",
    "clip",
    "hf_clip",
]


def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    torch.manual_seed(7)  # the same noise, masks and timesteps every call
    return model.training_losses(batch)["loss"]


def perturb(model: torch.nn.Module) -> None:
    """Adapters that change the output (a fresh one's B is zero)."""
    gen = g(8)
    for layer in lora_layers(model):
        for p in layer.lora_B.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_adapters_train_and_the_adapted_model_starts_as_its_base(kind, tmp_path):
    model, batch = make(kind, tmp_path)
    model.train()
    base_loss = loss(model, batch)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = add_lora(model, LoraSpec(rank=2))
    assert torch.equal(loss(model, batch), base_loss)  # B = 0: the update starts at nothing
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert trainable < sum(p.numel() for p in base.values()) / 2
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss(model, batch).backward()
    optimizer.step()
    after = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()}
    for name, weight in base.items():  # the base never moved
        assert torch.equal(after[name], weight), name
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved  # the adapters did


@pytest.mark.parametrize("kind", ["unet", "dalle_prior", "hf_clip"])
def test_scale_zero_is_the_base_exactly_and_fused_equals_unfused(kind, tmp_path):
    model, batch = make(kind, tmp_path)
    # frozen, as adapters leave it: torch's attention takes another (fast) path in eval mode
    # once no weight needs a gradient, which moves the base's own outputs by an ulp
    model.eval().requires_grad_(False)
    base_loss = loss(model, batch)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, LoraSpec(rank=4, alpha=8))
    perturb(model)
    adapted = loss(model, batch)
    assert not torch.equal(adapted, base_loss)
    set_lora_scale(model, 0.0)
    assert torch.equal(loss(model, batch), base_loss)
    set_lora_scale(model, 1.0)
    fuse_lora(model)
    assert torch.allclose(loss(model, batch), adapted, rtol=1e-4, atol=1e-6)
    unfuse_lora(model)
    for key, value in model.state_dict().items():  # bit for bit, not W + BA - BA
        if "lora_" not in key:
            assert torch.equal(value, base_state[key.replace(".base_layer.", ".")]), key


def test_adapters_save_alone_and_load_back_on_their_base(tmp_path):
    model, batch = make("unet", tmp_path)
    model.eval().save_pretrained(tmp_path / "base")
    add_lora(model, LoraSpec(rank=4))
    perturb(model)
    model.lora_base_path = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapters")
    files = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert files == ["lora.safetensors", "lora_config.json"]  # no copy of the base
    size = (tmp_path / "adapters" / "lora.safetensors").stat().st_size
    assert size < (tmp_path / "base" / "diffusion_pytorch_model.safetensors").stat().st_size / 4
    again = load_model(tmp_path / "adapters").eval()  # the base it names, adapted
    assert torch.equal(loss(again, batch), loss(model, batch))


def test_adapters_for_other_base_weights_are_refused_naming_both(tmp_path):
    model, _ = make("unet", tmp_path)
    add_lora(model, LoraSpec(rank=4))
    model.lora_base_path = "unused"
    model.save_pretrained(tmp_path / "adapters")
    config, weights = read_lora(tmp_path / "adapters")
    other = LatentDenoiser(**ldm_tiny.DENOISER)  # the same shape, other weights
    with pytest.raises(LoraError, match="other base weights") as err:
        load_lora(other, config["components"]["model"], weights["model"])
    assert config["components"]["model"]["base"] in str(err.value)
    assert base_id(other) in str(err.value)


def test_the_base_id_is_the_same_in_float32_and_float16(tmp_path):
    model, _ = make("unet", tmp_path)
    half = model.to(torch.float16)
    assert base_id(model.float()) == base_id(half.float())  # one base in either dtype
    other = LatentDenoiser(**ldm_tiny.DENOISER)
    assert base_id(other) != base_id(model)


def test_bad_specs_and_targets_are_named():
    with pytest.raises(LoraError, match=r"model\.lora\.rank=0"):
        LoraSpec.from_dict({"rank": 0}, "cfg")
    with pytest.raises(LoraError, match=r"unknown key 'model\.lora\.ranks'"):
        LoraSpec.from_dict({"ranks": 4}, "cfg")
    with pytest.raises(LoraError, match=r"model\.lora\.targets"):
        LoraSpec.from_dict({"targets": "to_q"}, "cfg")
    with pytest.raises(LoraError, match=r"model\.lora\.alpha"):
        LoraSpec.from_dict({"alpha": -1}, "cfg")
    model = LatentDenoiser(**ldm_tiny.DENOISER)
    with pytest.raises(LoraError, match="'to_z' names no linear layer"):
        add_lora(model, LoraSpec(targets=("to_z",)))
    with pytest.raises(LoraError, match="takes no LoRA adapters"):
        add_lora(
            VQVAE(image_size=16, channels=[8, 16], num_res_blocks=1, embed_dim=4, codebook_size=16),
            LoraSpec(),
        )


def test_the_command_lines_name_the_adapter_config_as_the_library_writes_it():
    from t2i import cli
    from t2i.models import lora

    assert cli.LORA_CONFIG == lora.CONFIG_FILE
