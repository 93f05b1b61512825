"""diffusers' step callback on every route: the dict `callback_on_step_end` returns is used
(a callback may change the latents, or the codes), `callback_on_step_end_tensor_inputs` is
accepted and checked, and what a callback cannot change is refused by name."""

from __future__ import annotations

import ldm_tiny
import pytest
import torch
from conftest import gen, tiny_route


def test_the_latents_a_callback_returns_go_on():
    pipe = ldm_tiny.pipeline()
    kw = dict(num_images_per_prompt=1, num_inference_steps=3, output_type="pt")
    plain = pipe("a red circle", generator=gen(0), **kw).images
    seen = []

    def keep(p, step, t, tensors):
        seen.append(sorted(tensors))
        return tensors

    same = pipe(
        "a red circle",
        callback_on_step_end=keep,
        callback_on_step_end_tensor_inputs=["latents"],
        generator=gen(0),
        **kw,
    ).images
    assert torch.equal(same, plain) and seen == [["latents"]] * 3

    def zero(p, step, t, tensors):  # the last step's latents set to 0: the image of 0 latents
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 2 else tensors

    drawn = pipe("a red circle", callback_on_step_end=zero, **kw).images
    expected = pipe.vae.decode(torch.zeros(1, 4, 8, 8)).float().clamp(-1, 1) / 2 + 0.5
    torch.testing.assert_close(drawn, expected)
    with pytest.raises(ValueError, match="'codes' is not one of \\['latents'\\]"):
        pipe("a red circle", callback_on_step_end_tensor_inputs=["codes"], **kw)
    with pytest.raises(ValueError, match="returned a int; return its dict"):
        pipe("a red circle", callback_on_step_end=lambda *a: 1, **kw)


@pytest.mark.parametrize("route", ["dalle", "maskgit"])
def test_the_codes_a_callback_returns_go_on(route):
    pipe = tiny_route(route)
    kw = dict(num_images_per_prompt=1, generator=gen(0), output_type="pt")
    if route == "maskgit":
        kw["num_inference_steps"] = 4

    def fill(p, step, t, tensors):  # every code it may change set to 5
        codes = tensors["codes"].clone()
        codes[:, -1 if route == "dalle" else slice(None)] = 5
        return {"codes": codes}

    images = pipe("a red circle", callback_on_step_end=fill, **kw).images
    tokenizer = pipe.image_tokenizer
    expected = tokenizer.decode(torch.full((1, 4, 4), 5)).float().clamp(-1, 1) / 2 + 0.5
    torch.testing.assert_close(images, expected)
    if route == "dalle":

        def rewrite(p, step, t, tensors):
            return {"codes": torch.zeros_like(tensors["codes"])} if step == 3 else tensors

        with pytest.raises(ValueError, match="changed codes drawn before this step"):
            pipe("a red circle", callback_on_step_end=rewrite, **kw)
