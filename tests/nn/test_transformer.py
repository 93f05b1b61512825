"""The causal transformer and its key/value cache."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from t2i.nn.transformer import CacheMemory, KVCache, SelfAttention, Transformer, _attend_one


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


@pytest.mark.parametrize("rows", [3, 130])  # 130 rows x 2 heads: the whole-buffer matmul path
def test_one_position_at_a_time_through_the_cache_equals_one_pass_at_any_batch(rows):
    torch.manual_seed(0)
    model = Transformer(dim=16, depth=2, heads=2).eval()
    x = torch.randn(rows, 7, 16)
    cache = model.new_cache(9)  # room to spare: the unwritten positions must not count
    steps = [model(x[:, :3], cache)] + [model(x[:, i : i + 1], cache) for i in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x))


def test_one_query_over_a_whole_buffer_ignores_the_positions_past_its_length():
    torch.manual_seed(0)
    q, k, v = torch.randn(4, 2, 1, 8), torch.randn(4, 2, 10, 8), torch.randn(4, 2, 10, 8)
    want = F.scaled_dot_product_attention(q, k[:, :, :6], v[:, :, :6])
    torch.testing.assert_close(_attend_one(q, k, v, 6), want)
    k[:, :, 6:], v[:, :, 6:] = 1e4, -1e4  # what an unwritten position holds does not leak
    torch.testing.assert_close(_attend_one(q, k, v, 6), want)


def test_prefill_computes_each_distinct_row_once_and_spreads_it():
    torch.manual_seed(0)
    model = Transformer(dim=16, depth=2, heads=2).eval()
    distinct = torch.randn(3, 5, 16)
    rows = torch.tensor([2, 0, 0, 1, 2, 2])
    x = distinct[rows]
    seen = []
    model.blocks[0].register_forward_hook(lambda m, a, out: seen.append(len(a[0])))
    cache = model.new_cache(7)
    out = model.prefill(x, cache)
    assert seen == [3]  # the first block ran over the 3 distinct rows, not the 6
    torch.testing.assert_close(out, model(x))
    # the cache holds every row's keys and values: the next position reads them
    step = torch.randn(6, 1, 16)
    plain = model.new_cache(7)
    model(x, plain)
    torch.testing.assert_close(model(step, cache), model(step, plain))
    assert cache.length == plain.length == 6


def test_cache_memory_is_reused_by_the_next_cache_zeroed_and_never_shared_by_two_live_ones():
    memory = CacheMemory()
    kv = torch.ones(2, 2, 4, 3)

    def filled() -> KVCache:
        cache = KVCache(layers=2, max_len=5, memory=memory)
        cache.append(0, kv, kv)
        return cache

    first = filled()
    pointer = first.k.data_ptr()
    second = filled()  # asked while the first is alive: its own memory
    assert second.k.data_ptr() != pointer
    del first, second
    third = KVCache(layers=2, max_len=5, memory=memory)
    third.append(1, kv, kv)  # layer 1: layer 0 of the reused memory must read zeros
    assert third.k.data_ptr() == pointer
    assert not third.k[0].any() and not third.v[0].any()
    memory.release()
    assert memory.flat is None and third.k.data_ptr() == pointer  # the live cache keeps it


def test_cache_memory_made_under_inference_mode_serves_a_later_no_grad_call():
    torch.manual_seed(0)
    model = Transformer(dim=16, depth=2, heads=2).eval()
    x = torch.randn(3, 4, 16)
    with torch.inference_mode():
        model(x, model.new_cache(4))
    with torch.no_grad():  # writing the inference-mode memory here would raise
        out = model(x, model.new_cache(4))
    torch.testing.assert_close(out, model(x))


def test_a_copied_or_pickled_transformer_keeps_no_cache_memory_of_the_original():
    model = Transformer(dim=16, depth=1, heads=2).eval()
    model(torch.randn(2, 3, 16), model.new_cache(3))
    assert model.cache_memory.flat is not None
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.cache_memory.flat is None
        out = other(torch.randn(2, 3, 16), other.new_cache(3))  # and it makes its own
        assert out.shape == (2, 3, 16) and other.cache_memory.flat is not None


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
