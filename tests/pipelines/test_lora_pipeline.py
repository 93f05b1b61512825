"""LoRA adapters on a pipeline (`load_lora_weights`, `set_lora_scale`, `fuse_lora` /
`unfuse_lora`, `unload_lora_weights`): unfused at scale 0 a pipeline draws exactly its base's
images, fused equals unfused within float tolerance, adapters for another base are refused
before any component changes, and a pipeline carrying adapters is not saved as if it had
none."""

from __future__ import annotations

import ldm_tiny
import pytest
import torch
from conftest import gen

from t2i.models.lora import LoraError, LoraSpec, add_lora, lora_layers, save_lora

PROMPTS = ["a red circle", "a blue square"]


def draw(pipe) -> torch.Tensor:
    return pipe(PROMPTS, num_images_per_prompt=2, generator=gen(0), output_type="pt").images


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Adapters on the tiny pipeline's denoiser (seed 0), their update made nonzero."""
    folder = tmp_path_factory.mktemp("lora")
    unet = ldm_tiny.parts(seed=0)["unet"]
    add_lora(unet, LoraSpec(rank=4))
    for layer in lora_layers(unet):
        torch.nn.init.normal_(layer.lora_B["t2i"].weight, std=0.3, generator=gen(1))
    save_lora(folder, {"unet": unet}, base_pipeline="tiny")
    return folder


def test_scale_zero_draws_the_base_and_fused_equals_unfused(adapters):
    pipe = ldm_tiny.pipeline(seed=0)
    base = draw(pipe)
    pipe.load_lora_weights(adapters)
    assert pipe.lora_components() == ["unet"]
    adapted = draw(pipe)
    assert (adapted - base).abs().max() > 1e-3  # the adapters act
    pipe.set_lora_scale(0.0)
    assert torch.equal(draw(pipe), base)
    pipe.set_lora_scale(1.0)
    pipe.fuse_lora()
    assert torch.allclose(draw(pipe), adapted, atol=1e-4)
    pipe.unfuse_lora()
    assert torch.equal(draw(pipe), adapted)
    pipe.unload_lora_weights()
    assert pipe.lora_components() == [] and torch.equal(draw(pipe), base)


def test_adapters_for_another_base_are_refused_before_anything_changes(adapters):
    other = ldm_tiny.pipeline(seed=1)
    before = draw(other)
    with pytest.raises(
        LoraError, match="other base weights.*load the pipeline they were trained from"
    ):
        other.load_lora_weights(adapters)
    assert other.lora_components() == [] and torch.equal(draw(other), before)


def test_a_pipeline_carrying_adapters_is_not_saved_as_if_whole(adapters, tmp_path):
    pipe = ldm_tiny.pipeline(seed=0)
    pipe.load_lora_weights(adapters)
    with pytest.raises(ValueError, match="carries LoRA adapters"):
        pipe.save_pretrained(tmp_path / "p")
    adapted = draw(pipe)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # fused: the weights keep the update
    pipe.save_pretrained(tmp_path / "fused")
    again = type(pipe).from_pretrained(tmp_path / "fused")
    again.set_progress_bar_config(disable=True)
    assert torch.allclose(draw(again), adapted, atol=1e-4)


def test_adapters_of_a_component_the_pipeline_lacks_are_named(adapters, tmp_path):
    from conftest import tiny_pipeline

    with pytest.raises(LoraError, match="adapters of a unet, which this"):
        tiny_pipeline().load_lora_weights(adapters)
    with pytest.raises(LoraError, match="not a LoRA adapter folder"):
        tiny_pipeline().load_lora_weights(tmp_path)
