"""Top-k / top-p filtering and seeded token sampling."""

import pytest
import torch

from t2i.nn.sampling import filter_logits, sample_logits


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert filter_logits(probs.log(), top_p=0.7).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits(probs.log(), top_p=0.8).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits(probs.log(), top_p=0.81).isfinite().tolist() == [[True, True, True, False]]
    assert filter_logits(probs.log(), top_p=0.1).isfinite().sum() == 1  # the top token stays


def test_top_p_works_on_unsorted_rows():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]])
    kept = filter_logits(logits, top_p=0.5).isfinite()
    assert kept.tolist() == [[False, True, False], [False, False, True]]


def test_sampling_follows_the_probabilities_and_the_seed():
    probs = torch.tensor([0.1, 0.2, 0.7])
    logits = probs.log().expand(20_000, -1)
    draws = sample_logits(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.015)
    again = sample_logits(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_temperature_zero_and_top_k_one_are_greedy():
    logits = torch.randn(50, 10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_logits(logits, temperature=0.0), logits.argmax(-1))
    assert torch.equal(sample_logits(logits, top_k=1, generator=g), logits.argmax(-1))


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(torch.zeros(1, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        filter_logits(torch.zeros(1, 3), top_p=0.0)
