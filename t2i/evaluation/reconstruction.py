"""How good is a tokenizer: PSNR, what the judge still sees after the trip through the codes,
and how much of the codebook is used.

Works with any object that has `encode`, `decode` and `num_tokens` (every
`t2i.models.ImageTokenizer`); knows no model class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from t2i.evaluation.judge import judge_many
from t2i.nn.metrics import psnr
from t2i.nn.quantizer import code_statistics


@torch.no_grad()
def reconstruction_report(tokenizer: Any, batches: Iterable[dict]) -> dict[str, Any]:
    """Reconstruction figures of a tokenizer over a data set.

    Args:
        tokenizer: has `encode(x)` and `decode(tokens)`, in eval mode: an image tokenizer
            (codes; `num_tokens` of them) or a latent autoencoder (continuous latents).
        batches: dicts with `pixel_values` (N, 3, H, W) in [-1, 1] and `spec`.

    Returns:
        {"psnr": mean per-image dB, "fidelity_originals", "fidelity_reconstructions", the
        judge's prompt fidelity on both, "fidelity_ratio" (reconstructions / originals),
        "codebook" (a tokenizer's): per level {"usage": share of codes used, "perplexity"},
        "n"}.
    """
    device = next(tokenizer.parameters()).device
    originals, recons, specs, scores, grids = [], [], [], [], []
    for batch in batches:
        x = batch["pixel_values"].to(device)
        tokens = tokenizer.encode(x)
        y = tokenizer.decode(tokens).clamp(-1, 1)
        scores.append(psnr(y, x).cpu())
        originals += list(x.cpu())
        recons += list(y.float().cpu())
        specs += batch["spec"]
        grids.append([t.cpu() for t in (tokens if isinstance(tokens, tuple) else (tokens,))])
    fid_orig = judge_many(originals, specs)["fidelity"]
    fid_recon = judge_many(recons, specs)["fidelity"]
    levels = ["top", "bottom"] if len(grids[0]) == 2 else ["codes"]
    codebook = {}
    for i, name in enumerate(levels if hasattr(tokenizer, "num_tokens") else []):
        perplexity, usage = code_statistics(torch.cat([g[i] for g in grids]), tokenizer.num_tokens)
        codebook[name] = {
            "usage": round(float(usage), 4),
            "perplexity": round(float(perplexity), 1),
        }
    return {
        "psnr": float(torch.cat(scores).mean()),
        "fidelity_originals": fid_orig,
        "fidelity_reconstructions": fid_recon,
        "fidelity_ratio": fid_recon / max(fid_orig, 1e-9),
        **({"codebook": codebook} if codebook else {}),
        "n": len(specs),
    }
