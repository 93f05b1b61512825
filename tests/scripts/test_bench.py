"""scripts/bench.py: the prior's model FLOPs, which its MFU row divides by the device's peak."""

from __future__ import annotations

import pytest
import torch
from conftest import load_script, tiny_pipeline
from torch.utils.flop_counter import FlopCounterMode

bench = load_script("bench")


@pytest.mark.parametrize("text_encoder", ["clip", "embed", "clip_image"])
def test_prior_flops_match_torch_flop_counter_on_a_training_step(text_encoder):
    if text_encoder == "clip_image":  # unCLIP's decoder: 2 prefix + 4 x 4 image tokens
        prior = tiny_pipeline(unclip=True).decoder.train()
    else:  # 32 text + 4 x 4 image tokens
        prior = tiny_pipeline(text_encoder).prior.train()
    n = 4
    batch = {
        "image_tokens": torch.randint(0, 32, (n, 4, 4)),
        "input_ids": torch.randint(1, 49408, (n, 32)),  # no padding: the text head sees all
        "text_states": torch.randn(n, 32, 32),
    }
    if text_encoder == "clip_image":
        batch["image_embeds"] = torch.randn(n, prior.config.embed_dim)
    with FlopCounterMode(display=False) as counter:
        prior.training_losses(batch)["loss"].backward()
    per_token, seq = bench.prior_flops_per_token(prior)
    assert seq == prior.config.context_length + 16 - 1
    # the counter skips the CPU's fused attention kernel: take the attention term out
    attention = 12.0 * prior.config.depth * prior.config.dim * seq * seq
    counted = counter.get_total_flops()
    assert per_token * seq * n - attention * n == pytest.approx(counted, rel=0.01)


def test_mfu_row_needs_a_peak_and_divides_by_it():
    prior = tiny_pipeline().prior
    assert len(bench.prior_token_rows(prior, 10.0, None, "p")) == 1  # tokens/s only
    (_, unit, tokens), (_, pct, mfu) = bench.prior_token_rows(prior, 10.0, 1.0, "p")
    per_token, seq = bench.prior_flops_per_token(prior)
    assert (unit, pct) == ("tokens/s", "%") and tokens == 10.0 * seq
    assert mfu == pytest.approx(100 * tokens * per_token / 1e12)
    assert bench.peak_tflops(torch.device("cpu"), None) is None
    assert bench.peak_tflops(torch.device("cpu"), 2.5) == 2.5


def test_a_table_names_the_command_that_made_it():
    assert bench.command(["--out", "docs/BENCHMARKS.md"]) == "make bench"
    assert bench.command(["--models", "decoder", "--no-loading"]) == (
        "python scripts/bench.py --models decoder --no-loading"
    )
