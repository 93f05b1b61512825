"""Vector quantisation with a straight-through estimator, for VQ-VAE and VQ-VAE-2.

- van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning": the
  nearest-code lookup, the straight-through estimator z + sg[z_q - z] (section 3.2), the loss
  beta ||sg[z] - z_q||^2 + gamma ||z - sg[z_q]||^2 (eq. 3; here beta weighs the codebook term
  and gamma < beta the commitment term, as our seed writes it), and the EMA codebook update
  with Laplace smoothing (appendix A.1) in place of the codebook term.
- Lancucki et al. 2020, "Robust Training of Vector Quantized Bottleneck Models": k-means
  initialisation of the codebook from data, and re-seeding dead codes from the batch.
- Yu et al. 2022, "Vector-quantized Image Modeling with Improved VQGAN": l2-normalised codes
  (cosine similarity) and a lower-dimensional codebook behind linear projections.

The option names follow vector-quantize-pytorch (`codebook_dim`, `kmeans_init`,
`use_cosine_sim`, `threshold_ema_dead_code`, `ema_update`, `decay`). On several processes the
EMA statistics are summed across them, and data-driven codebook changes (k-means
initialisation, dead-code restarts) are broadcast from the first, so every copy stays equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What `VectorQuantizer.forward` returns.

    Args:
        quantized: z + sg[z_q - z] projected back, (B, dim, H, W): equals z_q in value and
            passes the gradient to z.
        indices: code indices, (B, H, W), int64.
        codebook_loss: ||sg[z] - z_q||^2, mean over elements (zero with EMA updates).
        commitment_loss: ||z - sg[z_q]||^2, mean over elements.
        perplexity: exp(entropy) of the batch's code histogram, 1 to codebook_size.
        usage: share of the codebook used in the batch.
    """

    quantized: Tensor
    indices: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    usage: Tensor


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: Tensor) -> Tensor:
    """Sum a tensor over processes (no-op on one)."""
    if _is_distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: Tensor) -> Tensor:
    """Copy the first process's tensor to all (no-op on one)."""
    if _is_distributed():
        dist.broadcast(t, src=0)
    return t


def kmeans(x: Tensor, k: int, iters: int, cosine: bool = False) -> Tensor:
    """Lloyd's k-means on rows of x, started from k random rows (with repeats if too few).

    Args:
        x: (N, D) points.
        k: number of centroids.
        iters: Lloyd iterations.
        cosine: cluster by cosine similarity and keep the centroids unit-norm.

    Returns:
        (k, D) centroids; a centroid left without points keeps its previous position.
    """
    pick = torch.randperm(x.shape[0], device=x.device)[:k]
    if pick.numel() < k:
        pick = torch.randint(0, x.shape[0], (k,), device=x.device)
    centroids = x[pick].clone()
    for _ in range(iters):
        assign = _nearest(x, centroids, cosine)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # (k, D)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if cosine:
            centroids = F.normalize(centroids, dim=-1)
    return centroids


def code_statistics(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Perplexity (exp of the entropy of the code histogram, 1 to K) and usage (share of codes
    that occur) of a set of code indices.

    Args:
        indices: code indices, any shape.
        codebook_size: K.
    """
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()  # (K,)
    probs = counts / counts.sum().clamp(min=1.0)
    perplexity = torch.exp(-(probs * probs.clamp(min=1e-10).log()).sum())
    return perplexity, (counts > 0).float().mean()


def _nearest(x: Tensor, codes: Tensor, cosine: bool) -> Tensor:
    """Index of the nearest code for each row of x: (N,). Euclidean, or cosine when asked."""
    if cosine:
        return (x @ codes.t()).argmax(-1)
    dist2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(1)  # (N, K)
    return dist2.argmin(-1)


class VectorQuantizer(nn.Module):
    """Maps each spatial feature vector to its nearest codebook entry.

    Args:
        dim: channels of the feature map it quantizes.
        codebook_size: number of codes K.
        codebook_dim: size of a code; when it differs from `dim`, features are projected
            down before the lookup and the code projected back up (a low-dimensional codebook).
        beta: weight of the codebook term ||sg[z] - z_q||^2 (ignored with EMA updates).
        gamma: weight of the commitment term ||z - sg[z_q]||^2; the seed asks gamma < beta.
        ema_update: update codes as exponential moving averages of their assigned features
            instead of by gradient.
        decay: EMA decay, for the code updates and for the usage counts.
        eps: Laplace smoothing of the EMA counts.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        use_cosine_sim: l2-normalise features and codes; nearest = highest cosine similarity.
        threshold_ema_dead_code: a code whose EMA usage count falls below this is re-seeded
            with a random feature of the current batch; 0 turns restarts off.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        beta: float = 1.0,
        gamma: float = 0.25,
        ema_update: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        use_cosine_sim: bool = False,
        threshold_ema_dead_code: float = 0.0,
    ) -> None:
        super().__init__()
        codebook_dim = codebook_dim or dim
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.beta, self.gamma = beta, gamma
        self.ema_update, self.decay, self.eps = ema_update, decay, eps
        self.kmeans_iters, self.cosine = kmeans_iters, use_cosine_sim
        self.threshold_ema_dead_code = threshold_ema_dead_code
        low_dim = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if low_dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if low_dim else nn.Identity()
        embed = torch.empty(codebook_size, codebook_dim).uniform_(
            -1.0 / codebook_size, 1.0 / codebook_size
        )  # (K, d), as in the VQ-VAE reference code
        if use_cosine_sim:
            embed = F.normalize(torch.randn(codebook_size, codebook_dim), dim=-1)
        if ema_update:
            self.register_buffer("embed", embed)
            self.register_buffer("embed_avg", embed.clone())  # EMA of the assigned sums
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # EMA usage counts
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    def codebook(self) -> Tensor:
        """The codes used for lookup, (K, codebook_dim) (unit-norm with cosine similarity)."""
        return F.normalize(self.embed, dim=-1) if self.cosine else self.embed

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes for indices (B, H, W), projected back: (B, dim, H, W).

        Args:
            indices: code indices, any integer dtype.
        """
        z_q = F.embedding(indices.long(), self.codebook())  # (B, H, W, d)
        return rearrange(self.project_out(z_q), "b h w c -> b c h w")

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize a feature map (B, dim, H, W); in training mode also update the codebook.

        Args:
            z: features from an encoder, any float dtype (the lookup runs in fp32).
        """
        b, _, h, w = z.shape
        x = self.project_in(rearrange(z, "b c h w -> (b h w) c")).float()  # (N, d)
        if self.cosine:
            x = F.normalize(x, dim=-1)
        if self.training and not bool(self.initted):
            self._init_from_data(x.detach())
        codes = self.codebook().float()
        indices = _nearest(x.detach(), codes.detach(), self.cosine)  # (N,)
        z_q = F.embedding(indices, codes)  # (N, d); gradient to the codebook
        if self.training:
            counts = torch.bincount(indices, minlength=self.codebook_size).float()  # (K,)
            self._update(x.detach(), indices, counts)
        codebook_loss = (
            torch.zeros((), device=z.device) if self.ema_update else F.mse_loss(z_q, x.detach())
        )
        commitment_loss = F.mse_loss(x, z_q.detach())
        z_st = z_q.detach() + (x - x.detach())  # straight-through: exactly z_q, the gradient of x
        quantized = rearrange(self.project_out(z_st.to(z.dtype)), "(b h w) c -> b c h w", b=b, h=h)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(b, h, w),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage=usage,
        )

    def loss(self, out: QuantizerOutput) -> Tensor:
        """beta * codebook term + gamma * commitment term (eq. 3 of van den Oord et al.)."""
        return self.beta * out.codebook_loss + self.gamma * out.commitment_loss

    @torch.no_grad()
    def _init_from_data(self, x: Tensor) -> None:
        """Set the codebook to k-means centroids of the first batch's features."""
        centroids = _broadcast(kmeans(x, self.codebook_size, self.kmeans_iters, self.cosine))
        self.embed.data.copy_(centroids)
        if self.ema_update:
            self.embed_avg.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, x: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA usage counts, EMA code updates (when on), and dead-code restarts."""
        counts = _all_reduce(counts.clone())
        self.cluster_size.lerp_(counts, 1.0 - self.decay)  # N_i <- decay N_i + (1-decay) n_i
        if self.ema_update:
            sums = torch.zeros_like(self.embed_avg).index_add_(0, indices, x)  # (K, d)
            self.embed_avg.lerp_(_all_reduce(sums), 1.0 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
            self.embed.copy_(self.embed_avg / smoothed[:, None])  # e_i = m_i / N_i
        if self.threshold_ema_dead_code > 0:
            self._restart_dead_codes(x)

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> None:
        """Re-seed each code used less than the threshold with a random feature of the batch."""
        dead = self.cluster_size < self.threshold_ema_dead_code  # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(0, x.shape[0], (n_dead,), device=x.device)
        seeds = _broadcast(x[pick].clone())  # (n_dead, d)
        self.embed.data[dead] = seeds
        self.cluster_size[dead] = self.threshold_ema_dead_code
        if self.ema_update:
            self.embed_avg[dead] = seeds * self.threshold_ema_dead_code
