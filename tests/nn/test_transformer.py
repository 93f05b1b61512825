"""The causal transformer and its key/value cache."""

from __future__ import annotations

import pytest
import torch

from t2i.nn.transformer import SelfAttention, Transformer


@pytest.mark.parametrize("chunks", [(5, 3), (1, 1, 1, 1, 1, 1, 1, 1), (2, 4, 2)])
def test_feeding_a_sequence_in_chunks_through_the_cache_equals_one_pass(chunks):
    torch.manual_seed(0)
    model = Transformer(dim=16, depth=2, heads=2).eval()
    x = torch.randn(3, sum(chunks), 16)
    full = model(x)
    cache = model.new_cache(sum(chunks))
    outs, start = [], 0
    for n in chunks:
        outs.append(model(x[:, start : start + n], cache))
        start += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    assert cache.length == sum(chunks)


def test_attention_is_causal():
    torch.manual_seed(0)
    attn = SelfAttention(dim=8, heads=2)
    x = torch.randn(1, 6, 8)
    y = attn(x)
    x2 = x.clone()
    x2[:, 4] += 1.0
    y2 = attn(x2)
    torch.testing.assert_close(y2[:, :4], y[:, :4])
    assert not torch.allclose(y2[:, 4:], y[:, 4:])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="heads=3 must divide dim=8"):
        SelfAttention(8, 3)
    with pytest.raises(ValueError, match="attention backend 'flash'"):
        SelfAttention(8, 2, backend="flash")
