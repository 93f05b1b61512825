"""A transformer with a key/value cache: causal for the autoregressive priors, bidirectional
(`causal=False`) for the masked prior.

Vaswani et al. 2017 (attention), with the pre-norm blocks of GPT-2 (Radford et al. 2019):
x + attn(ln(x)), then x + mlp(ln(x)). Attention runs through torch's
`scaled_dot_product_attention` (flash or memory-efficient kernels where the device has
them), or xformers' `memory_efficient_attention` when asked for and installed.

With a `KVCache`, a forward pass over the new positions only appends their keys and values
and attends to everything cached: sampling a sequence costs one position's work per step.
Without the causal mask every position attends to every other (MaskGIT's bidirectional
transformer, Chang et al. 2022); a cache then has no use.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_BACKENDS = ("sdpa", "xformers")


class CacheMemory:
    """The memory of a transformer's key/value caches, kept from one sampling call to the next.

    On a CPU, fresh memory faults page by page on its first write; at batch 64 the shipped
    prior's cache is 150 MB, and faulting it costs more than the arithmetic of the prefix
    that fills it. A cache takes its buffers from here, so the second call of a process
    reuses the first's pages. A cache still alive when another asks (two samplings at once)
    keeps its memory and the other gets fresh buffers. `release` gives the memory back.
    """

    def __init__(self) -> None:
        self.flat: Tensor | None = None
        self._owner: weakref.ref | None = None
        self._lock = threading.Lock()  # two threads sampling at once (a web demo's)

    def __getstate__(self) -> dict:
        return {}  # a copied or pickled model starts with no kept memory

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def take(self, owner: KVCache, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A zeroed buffer (2, *shape) of like's dtype and device for keys and values."""
        n = 2 * math.prod(shape)
        with self._lock:
            if self._owner is not None and self._owner() is not None:  # in use: do not share
                return like.new_zeros(2, *shape)
            self._owner = weakref.ref(owner)
            flat = self.flat
            fits = (
                flat is not None
                and flat.numel() >= n
                and (flat.dtype, flat.device) == (like.dtype, like.device)
                # memory made under torch.inference_mode cannot be written outside it
                and (not flat.is_inference() or torch.is_inference_mode_enabled())
            )
            if not fits:
                self.flat = None  # free the old memory before the new is made
                self.flat = like.new_zeros(n)  # its pages fault in one pass
                return self.flat.view(2, *shape)
        return flat[:n].zero_().view(2, *shape)

    def release(self) -> None:
        """Free the kept memory (a cache that holds it keeps it until it is gone)."""
        self.flat, self._owner = None, None


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated on the first
    append with that append's batch, heads, device and dtype.

    Args:
        layers: transformer layers.
        max_len: the longest sequence it will hold.
        memory: where its buffers come from (the transformer's, reused between calls); None
            makes fresh ones.
    """

    def __init__(self, layers: int, max_len: int, memory: CacheMemory | None = None) -> None:
        self.layers, self.max_len, self.memory = layers, max_len, memory
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0  # positions cached

    def _allocate(self, batch: int, heads: int, head_dim: int, like: Tensor) -> None:
        shape = (self.layers, batch, heads, self.max_len, head_dim)
        if self.memory is None:
            kv = like.new_zeros(2, *shape)  # zero-filled: its pages fault in one pass
        else:
            kv = self.memory.take(self, shape, like)
        self.k, self.v = kv[0], kv[1]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store a layer's keys and values of the new positions (B, H, T, D) and return all
        of that layer's cached ones, (B, H, length + T, D)."""
        if self.k is None:
            b, h, _, d = k.shape
            self._allocate(b, h, d, k)
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} asked for")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def whole(self, layer: int) -> tuple[Tensor, Tensor]:
        """A layer's whole key and value buffers (B, H, max_len, D), contiguous; the
        positions not yet written hold zeros."""
        return self.k[layer], self.v[layer]

    def advance(self, n: int) -> None:
        """Mark n more positions as cached (after every layer has appended them)."""
        self.length += n

    def load(self, other: KVCache, rows: Tensor) -> None:
        """Fill this empty cache with other's positions, its row rows[i] as row i (repeats
        allowed): a batch whose rows share a prefix computes it once, then spreads it."""
        if self.length or other.k is None or other.v is None:
            raise ValueError("load needs an empty cache and a filled one")
        _, _, h, _, d = other.k.shape
        self._allocate(len(rows), h, d, other.k)
        n = self.length = other.length
        for layer in range(self.layers):  # a layer at a time: small temporaries
            self.k[layer, :, :, :n] = other.k[layer, :, :, :n].index_select(0, rows)
            self.v[layer, :, :, :n] = other.v[layer, :, :, :n].index_select(0, rows)


class SelfAttention(nn.Module):
    """Multi-head self-attention, causal unless told.

    Args:
        dim: model width.
        heads: attention heads; must divide dim.
        backend: "sdpa" (torch) or "xformers".
        causal: position i attends to positions <= i only (False: to all).
    """

    def __init__(self, dim: int, heads: int, backend: str = "sdpa", causal: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {backend!r}: use one of {ATTENTION_BACKENDS}")
        self.heads, self.backend, self.causal = heads, backend, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if cache is None:
            if self.causal:
                y = _attend(q, k, v, 0, self.backend)  # (B, H, T, D)
            else:
                y = _attend_all(q, k, v, self.backend)
        elif not self.causal:
            raise ValueError("a bidirectional attention has no use for a KV cache")
        else:
            past = cache.length
            k, v = cache.append(layer, k, v)  # (B, H, past + T, D)
            if t == 1 and self.backend == "sdpa" and _one_query_by_matmul(q):
                y = _attend_one(q, *cache.whole(layer), past + 1)
            else:
                y = _attend(q, k, v, past, self.backend)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


def _attend(q: Tensor, k: Tensor, v: Tensor, past: int, backend: str) -> Tensor:
    """Causal attention of T new queries over past + T keys: query i sees keys <= past + i."""
    t, s = q.shape[2], k.shape[2]
    if backend == "xformers":
        return _attend_xformers(q, k, v, past)
    if t == 1:  # one new position sees everything cached
        return F.scaled_dot_product_attention(q, k, v)
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _one_query_by_matmul(q: Tensor) -> bool:
    """Whether one new position of every row attends faster by `_attend_one` than by
    `scaled_dot_product_attention` over the cache's first positions: on a CPU, from 256 rows
    times heads (measured on this project's CPU, docs/BENCHMARKS.md)."""
    return q.device.type == "cpu" and q.shape[0] * q.shape[1] >= 256


def _attend_one(q: Tensor, k: Tensor, v: Tensor, length: int) -> Tensor:
    """One query per row (B, H, 1, D) over a cache's whole buffers (B, H, max_len, D), of
    which the first `length` positions hold keys and values (the rest hold zeros and are
    masked out), as two batched matmuls and a float32 softmax.

    A cache's first positions are a strided view of its buffers, and on a CPU a batched
    matmul over such a view ran about 4x slower than over a contiguous tensor of the same
    size (128 rows, 8 heads, 64 of 96 positions of 32, cold caches: 0.85 against 0.19 ms);
    the whole buffers are contiguous. At batch 64 of the shipped prior, reading all the
    positions this way beats reading the written ones through
    `scaled_dot_product_attention`'s flash kernel, which tiles for many queries; for few
    rows the one fused call wins by its fewer dispatches.
    """
    w = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5  # (B, H, 1, max_len)
    w[..., length:] = float("-inf")
    return w.softmax(-1).to(v.dtype) @ v


def _attend_all(q: Tensor, k: Tensor, v: Tensor, backend: str) -> Tensor:
    """Bidirectional attention: every query sees every key."""
    if backend == "xformers":
        return _attend_xformers(q, k, v, past=0, causal=False)
    return F.scaled_dot_product_attention(q, k, v)


def _attend_xformers(q: Tensor, k: Tensor, v: Tensor, past: int, causal: bool = True) -> Tensor:
    """The same attention through xformers (its layout is (B, T, H, D))."""
    try:
        import xformers.ops as xops
    except ImportError as err:
        raise ImportError(
            "attention='xformers' needs the xformers package (pip install 't2i[gpu]'); "
            "or use attention='sdpa'"
        ) from err
    bias = None
    if causal and q.shape[2] > 1:
        bias = xops.LowerTriangularFromBottomRightMask() if past else xops.LowerTriangularMask()
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias
    )
    return out.transpose(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), x + mlp(ln(x)).

    Args:
        dim: model width.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP over dim.
        dropout: dropout after attention and MLP.
        backend: attention backend.
        causal: causal attention (False: bidirectional).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        backend: str = "sdpa",
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, backend, causal)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cache, layer))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    """A stack of blocks, causal unless told, and a final LayerNorm.

    Args:
        dim: model width.
        depth: blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over dim.
        dropout: dropout inside the blocks.
        backend: "sdpa" or "xformers".
        causal: causal attention (the autoregressive priors); False: bidirectional (the
            masked prior).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        backend: str = "sdpa",
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, dropout, backend, causal) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.cache_memory = CacheMemory()

    def new_cache(self, max_len: int) -> KVCache:
        """An empty cache for sequences of up to `max_len` positions, its buffers taken from
        `cache_memory` (kept for the next call; `cache_memory.release()` frees them)."""
        return KVCache(len(self.blocks), max_len, self.cache_memory)

    def prefill(self, x: Tensor, cache: KVCache) -> Tensor:
        """The forward pass of a batch's first positions (B, T, dim) into an empty cache, each
        distinct row computed once and its states and keys and values spread over the rows
        that repeat it: the null prefix of every guided row, the caption of a prompt's
        several images. Returns (B, T, dim), as `forward` would."""
        if cache.length:
            raise ValueError(f"prefill needs an empty cache; this one holds {cache.length}")
        unique, rows = torch.unique(x.flatten(1), dim=0, return_inverse=True)
        if len(unique) == len(x):
            return self(x, cache)
        few = KVCache(cache.layers, x.shape[1])
        out = self(unique.view(len(unique), *x.shape[1:]), few)
        cache.load(few, rows)
        return out[rows]

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); with a cache, x holds only the new positions."""
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.ln_f(x)
