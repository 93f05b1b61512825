"""One generator per image and negative prompts, on every route: image i of a prompt depends
on its own generator alone (whatever the other prompts and images of the call are), as with
a list of generators in diffusers; a negative prompt is what the unconditional branch of
guidance reads."""

from __future__ import annotations

import ldm_tiny
import pytest
import torch
from conftest import gen, tiny_pipeline

ROUTES = ("dalle", "unclip", "unclip_pixels", "ldm", "maskgit")


@pytest.fixture(scope="module", params=ROUTES)
def route(request):
    """(name, pipeline, the call's fixed arguments) of each route."""
    name = request.param
    if name == "ldm":
        return name, ldm_tiny.pipeline(), dict(num_inference_steps=3)
    if name == "dalle":
        return name, tiny_pipeline().route("dalle"), {}
    if name == "maskgit":
        return name, tiny_pipeline(maskgit=True).route("maskgit"), dict(num_inference_steps=3)
    pixels = name == "unclip_pixels"
    pipe = tiny_pipeline(unclip=True, pixels=pixels).route("unclip")
    return name, pipe, dict(num_inference_steps=3)


def draw(pipe, prompts, seeds, n, **kw):
    """The images (as uint8, what a PNG holds) of one call with one generator per image."""
    generators = [gen(s) for s in seeds]
    out = pipe(prompts, num_images_per_prompt=n, generator=generators, output_type="pt", **kw)
    return (out.images * 255).round().to(torch.uint8)


def test_an_image_depends_on_its_own_generator_not_on_n_or_the_other_prompts(route):
    name, pipe, kw = route
    alone = draw(pipe, ["a red circle"], [7], 1, **kw)[0]
    # the same prompt and seed as image 0 of a call of 3 and as image 1 of another prompt's
    three = draw(pipe, ["a red circle"], [7, 8, 9], 3, **kw)
    assert torch.equal(three[0], alone)
    mixed = draw(pipe, ["a blue square", "a red circle"], [3, 4, 7, 5], 2, **kw)
    assert torch.equal(mixed[2], alone)
    # and the generator is what it depends on: another seed, another image
    assert not torch.equal(three[1], alone) and not torch.equal(mixed[0], mixed[1])


def test_a_list_of_the_wrong_length_is_refused_by_name(route):
    _, pipe, kw = route
    with pytest.raises(ValueError, match=r"generator: a list of 3 for 4 images drawn"):
        pipe(["a", "b"], num_images_per_prompt=2, generator=[gen(0)] * 3, **kw)
    with pytest.raises(ValueError, match=r"generator: a list of 2 for 4 images"):
        pipe(["a", "b"], num_images_per_prompt=2, generator=[gen(0), 1], **kw)


def test_with_reranking_each_candidate_has_its_generator(route):
    _, pipe, kw = route
    four = draw(pipe, ["a red circle"], range(4), 2, rerank=4, **kw)
    # the best of the same 4 candidates, whatever the number kept
    assert torch.equal(draw(pipe, ["a red circle"], range(4), 1, rerank=4, **kw)[0], four[0])
    with pytest.raises(ValueError, match="a list of 3 for 4 images drawn"):
        draw(pipe, ["a red circle"], range(3), 2, rerank=4, **kw)
    # one generator per image kept, as in diffusers: candidate j draws from image j % 2's
    # (in turn), the same as passing generators 0, 1, 0, 1 for the 4 candidates
    per_image = [gen(0), gen(1)]
    args = dict(num_images_per_prompt=2, rerank=4, output_type="pt", **kw)
    kept = pipe("a red circle", generator=per_image, **args).images
    shared = [gen(0), gen(1)]
    spelled = pipe("a red circle", generator=[shared[0], shared[1]] * 2, **args).images
    assert torch.equal(kept, spelled)


GUIDANCE = {"dalle": "guidance_scale", "ldm": "guidance_scale", "maskgit": "guidance_scale"}


def test_a_negative_prompt_is_the_unconditional_branch_of_guidance(route):
    name, pipe, kw = route
    key = GUIDANCE.get(name, "prior_guidance_scale")
    prompts, seeds = ["a red circle", "a blue square"], [1, 2, 3, 4]
    plain = draw(pipe, prompts, seeds, 2, **{key: 4.0}, **kw)
    other = draw(pipe, prompts, seeds, 2, **{key: 4.0}, negative_prompt="a green triangle", **kw)
    assert not torch.equal(plain, other)
    # negative = the prompt itself: u + s (c - u) = c, the conditional model alone
    same = draw(pipe, prompts, seeds, 2, **{key: 4.0}, negative_prompt=prompts, **kw)
    unguided = draw(pipe, prompts, seeds, 2, **{key: 1.0}, **kw)
    if name in ("dalle", "maskgit"):  # codes: the same draws
        assert torch.equal(same, unguided)
    else:  # continuous: the same up to float rounding of a batch twice the size
        assert (same.int() - unguided.int()).abs().max() <= 1
        assert not torch.equal(same, plain)
    with pytest.raises(ValueError, match="3 negative prompts for 2 prompts"):
        draw(pipe, prompts, seeds, 2, negative_prompt=["a", "b", "c"], **{key: 4.0}, **kw)


def test_an_unseen_word_is_warned_of_once_a_call_though_reranking_reads_the_prompt_again(
    route, caplog
):
    import logging

    _, pipe, kw = route
    seen = torch.zeros_like(pipe.clip.seen)
    seen[pipe.clip.tokenize(["a red circle of"])[0]] = True  # as if trained on those words
    pipe.clip.seen.copy_(seen)
    try:
        with caplog.at_level(logging.WARNING, logger="t2i.models.clip"):
            pipe("a photo of a red circle", num_images_per_prompt=2, rerank=4, **kw)
    finally:
        pipe.clip.seen.zero_()  # the module's pipeline, shared with the other tests
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].endswith("held: 'photo'; it cannot draw what it never saw")
