"""Probability maths shared by the latent-variable models: diagonal Gaussians (Kingma &
Welling 2014) and the Gumbel-softmax relaxation of categorical variables (Jang et al. 2017;
Maddison et al. 2017)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite early in training


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per dimension (Kingma & Welling 2014, appendix B).

    KL = 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2). Computed in the inputs' dtype (pass fp32).

    Args:
        mu: posterior means, (N, D).
        logvar: posterior log-variances, (N, D).

    Returns:
        (N, D) nats.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl_two(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, diagonal Gaussians.

    KL = 0.5 * (logvar_p - logvar_q + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 - 1).

    Args:
        mu_q: means of q, (N, D).
        logvar_q: log-variances of q, (N, D).
        mu_p: means of p, (N, D).
        logvar_p: log-variances of p, (N, D).

    Returns:
        (N, D) nats.
    """
    var_ratio = (logvar_q - logvar_p).exp()
    return 0.5 * (logvar_p - logvar_q + var_ratio + (mu_q - mu_p).pow(2) / logvar_p.exp() - 1.0)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, sigma: float) -> Tensor:
    """log N(x; mean, sigma^2 I), summed over all but the first dimension.

    Args:
        x: observations, (N, ...).
        mean: Gaussian means, same shape as x.
        sigma: the fixed standard deviation.

    Returns:
        (N,) nats.
    """
    log_density = -0.5 * ((x - mean) / sigma).pow(2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return log_density.flatten(1).sum(1)


def bits_per_dim(elbo_nats: Tensor, num_dims: int) -> Tensor:
    """Bits per dimension of 8-bit images, from an ELBO of the density on [-1, 1].

    Pixel k in {0..255} maps to x = k / 127.5 - 1, so each of the 256 bins has width 1 / 127.5 and
    P(bin) ~= p(x) / 127.5 per dimension: -log2 P(image) = (-log p(x) + D log 127.5) / ln 2.

    Args:
        elbo_nats: lower bounds on log p(x) in nats, any shape.
        num_dims: D, the number of pixel values (C * H * W) per image.
    """
    return (-elbo_nats + num_dims * math.log(127.5)) / (num_dims * math.log(2.0))


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) drawn from `generator`.

    Args:
        mu: means, (N, D).
        logvar: log-variances, (N, D).
        generator: source of eps; None uses the global RNG of mu's device.
    """
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def _gumbel_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Gumbel noise g = -log(-log U), fp32, shaped like `like`; U kept off 0 and 1."""
    finfo = torch.finfo(torch.float32)
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    return -torch.log(-torch.log(u.clamp(finfo.tiny, 1.0 - finfo.eps)))


def gumbel_softmax(
    logits: Tensor,
    tau: float | Tensor,
    hard: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A Gumbel-softmax sample over the last dimension (Jang et al. 2017, eq. 2), in fp32.

    Args:
        logits: unnormalised log-probabilities (..., K).
        tau: temperature > 0; a float or a scalar tensor.
        hard: return the one-hot of the argmax in the forward pass, with the soft sample's
            gradient (straight-through: y_hard - y_soft.detach() + y_soft).
        generator: source of the Gumbel noise.

    Returns:
        (..., K) points on the simplex (one-hot if `hard`).
    """
    y_soft = ((logits.float() + _gumbel_noise(logits, generator)) / tau).softmax(-1)
    if not hard:
        return y_soft
    index = y_soft.argmax(-1)
    y_hard = F.one_hot(index, y_soft.shape[-1]).to(y_soft.dtype)
    return y_hard - y_soft.detach() + y_soft


def gumbel_max(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exact draws from Categorical(softmax(logits)) by the Gumbel-max trick.

    Args:
        logits: unnormalised log-probabilities (..., K).
        generator: source of the Gumbel noise.

    Returns:
        (...,) class indices, int64.
    """
    return (logits.float() + _gumbel_noise(logits, generator)).argmax(-1)


class TemperatureSchedule:
    """tau(step) = max(tau_min, tau0 * exp(-rate * step)) (Jang et al. 2017, section 4).

    Args:
        tau0: temperature at step 0.
        tau_min: floor the temperature decays to.
        rate: decay rate per step.
    """

    def __init__(self, tau0: float, tau_min: float, rate: float) -> None:
        self.tau0, self.tau_min, self.rate = tau0, tau_min, rate

    def __call__(self, step: int | Tensor) -> Tensor:
        step = torch.as_tensor(step, dtype=torch.float32)
        return (self.tau0 * torch.exp(-self.rate * step)).clamp(min=self.tau_min)


def categorical_kl_uniform(logits: Tensor) -> Tensor:
    """KL(Categorical(softmax(logits)) || uniform over K) = sum_k q_k (log q_k + log K).

    Args:
        logits: (..., K).

    Returns:
        (...,) nats.
    """
    log_q = logits.float().log_softmax(-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(-1)


def code_perplexity(probs: Tensor) -> Tensor:
    """exp(entropy) of the batch-averaged class probabilities, averaged over variables.

    Args:
        probs: (N, L, K) class probabilities.

    Returns:
        a scalar in [1, K].
    """
    avg = probs.float().mean(0)  # (L, K)
    entropy = -(avg * avg.clamp(min=1e-10).log()).sum(-1)  # (L,)
    return entropy.exp().mean()
