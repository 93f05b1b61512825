"""Drawing tokens from logits: temperature, top-k and top-p (nucleus) filtering.

- Fan, Lewis & Dauphin 2018, "Hierarchical Neural Story Generation": top-k sampling.
- Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration": top-p sampling, the
  smallest set of tokens whose probabilities sum to at least p.
Randomness comes only from the `torch.Generator` passed in.
"""

from __future__ import annotations

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top k and outside the top-p nucleus.

    Args:
        logits: (..., V).
        top_k: keep the k largest logits (None or 0 = all).
        top_p: keep the smallest set of most likely tokens with probability >= top_p (None = all).

    Returns:
        (..., V) logits; the most likely token is always kept.
    """
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        if top_p <= 0.0:
            raise ValueError(f"top_p={top_p} must lie in (0, 1]")
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> Tensor:
    """One token per row of logits (N, V): softmax(filter(logits / temperature)), or the argmax
    when temperature is 0.

    Args:
        logits: (N, V).
        temperature: > 0 sharpens (< 1) or flattens (> 1); 0 is greedy.
        top_k: see `filter_logits`.
        top_p: see `filter_logits`.
        generator: the source of randomness: one for all rows, or a list of one per row (row
            i drawn from generator i alone, so it does not depend on the other rows). One on
            another device than the logits (a CPU generator for a model on the GPU) draws
            there, so a seed gives the same tokens.

    Returns:
        (N,) int64 token ids.
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0")
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    if isinstance(generator, list | tuple):
        if len(generator) != len(probs):
            raise ValueError(f"{len(generator)} generators for {len(probs)} rows of logits")
        rows = [_draw(row[None], g) for row, g in zip(probs, generator, strict=True)]
        return torch.cat(rows)
    return _draw(probs, generator)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of probabilities (N, V), drawn where the generator lives: (N,)."""
    if generator is not None and generator.device != probs.device:
        drawn = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return drawn.squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
