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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_BACKENDS = ("sdpa", "xformers")


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated on the first
    append with that append's batch, heads, device and dtype.

    Args:
        layers: transformer layers.
        max_len: the longest sequence it will hold.
    """

    def __init__(self, layers: int, max_len: int) -> None:
        self.layers, self.max_len = layers, max_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0  # positions cached

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store a layer's keys and values of the new positions (B, H, T, D) and return all
        of that layer's cached ones, (B, H, length + T, D)."""
        if self.k is None:
            b, h, _, d = k.shape
            self.k = k.new_empty(self.layers, b, h, self.max_len, d)
            self.v = v.new_empty(self.layers, b, h, self.max_len, d)
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} asked for")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark n more positions as cached (after every layer has appended them)."""
        self.length += n


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
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, past + T, D)
        if not self.causal:
            if cache is not None:
                raise ValueError("a bidirectional attention has no use for a KV cache")
            y = _attend_all(q, k, v, self.backend)
        else:
            y = _attend(q, k, v, past, self.backend)  # (B, H, T, D)
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

    def new_cache(self, max_len: int) -> KVCache:
        """An empty cache for sequences of up to `max_len` positions."""
        return KVCache(len(self.blocks), max_len)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); with a cache, x holds only the new positions."""
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.ln_f(x)
