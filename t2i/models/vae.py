"""The variational autoencoder and the beta-VAE.

- Kingma & Welling 2014, "Auto-Encoding Variational Bayes": the ELBO
  log p(x) >= E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)) (eq. 3), the reparameterisation
  z = mu + sigma * eps, and the closed-form Gaussian KL (appendix B).
- Higgins et al. 2017, "beta-VAE": the KL term weighted by beta (beta > 1 trades reconstruction
  for a more factorised code). `VAE` with `beta=1` is the plain VAE.
- Burda et al. 2016, "Importance Weighted Autoencoders": a latent unit is active when the
  variance over the data of its posterior mean exceeds 0.01.

Images live on [-1, 1]; the decoder gives the mean of a Gaussian with a fixed `sigma_dec`.
Log-likelihoods and KLs are computed in fp32 even under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.nn import VectorDecoder, VectorEncoder
from t2i.nn.distributions import (
    LOGVAR_RANGE,
    bits_per_dim,
    gaussian_kl,
    gaussian_log_likelihood,
    reparameterize,
)

ACTIVE_VARIANCE = 0.01  # Burda et al. 2016: a unit is active when Var_x(E_q[z_d]) > 0.01


class VAE(T2IModel):
    """A convolutional VAE with a `latent_dim` Gaussian latent; beta-VAE when `beta != 1`.

    Args:
        image_size: image side in pixels; divisible by 2**len(channels).
        in_channels: image channels.
        latent_dim: size of z.
        channels: encoder stage widths (each stage halves the resolution); the decoder mirrors it.
        sigma_dec: fixed std of the Gaussian likelihood p(x|z), on the [-1, 1] scale.
        beta: weight of the KL term in the loss (1 = the ELBO).
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        sigma_dec: float = 0.1,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = VectorEncoder(image_size, in_channels, channels, 2 * latent_dim)
        self.decoder = VectorDecoder(image_size, latent_dim, channels, in_channels)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of q(z|x): (mu, logvar), each (N, latent_dim), in fp32.

        Args:
            x: images (N, C, H, W) in [-1, 1].
        """
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)  # (N, D) each
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), (N, C, H, W) (unclamped).

        Args:
            z: latents (N, latent_dim).
        """
        return self.decoder(z.to(self.dtype))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior N(0, I): (n, C, H, W) in [-1, 1].

        Args:
            n: number of images.
            generator: source of the latents.
        """
        z = torch.randn(
            n, self.config.latent_dim, generator=generator, device=self.device, dtype=self.dtype
        )
        return self.decode(z).clamp(-1, 1)

    def kl_per_dim(self, x: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) of each latent dimension, (N, latent_dim) nats.

        Args:
            x: images (N, C, H, W) in [-1, 1].
        """
        return gaussian_kl(*self.encode(x))

    def elbo(
        self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """The ELBO of each image in nats, (N,), with E_q[log p(x|z)] averaged over num_samples z.

        Args:
            x: images (N, C, H, W) in [-1, 1].
            num_samples: Monte Carlo samples of z per image.
            generator: source of the samples.
        """
        mu, logvar = self.encode(x)
        log_lik = torch.stack(
            [
                self._log_likelihood(x, reparameterize(mu, logvar, generator))
                for _ in range(num_samples)
            ]
        ).mean(0)  # (N,)
        return log_lik - gaussian_kl(mu, logvar).sum(1)

    def _log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) per image, (N,), in fp32."""
        return gaussian_log_likelihood(x.float(), self.decode(z).float(), self.config.sigma_dec)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The beta-weighted negative ELBO per pixel dimension, plus logged terms.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].

        Returns:
            "loss" ((nll + beta * kl) / D, the batch mean), "recon" and "kl" (nats / image),
            "elbo_nats" (the beta = 1 ELBO per image), "bpd", "active_dims".
        """
        x = batch["pixel_values"]
        num_dims = x[0].numel()
        mu, logvar = self.encode(x)
        nll = -self._log_likelihood(x, reparameterize(mu, logvar))  # (N,)
        kl = gaussian_kl(mu, logvar).sum(1)  # (N,)
        elbo = -(nll + kl)
        return {
            "loss": (nll + self.config.beta * kl).mean() / num_dims,
            "recon": nll.mean(),
            "kl": kl.mean(),
            "elbo_nats": elbo.mean(),
            "bpd": bits_per_dim(elbo, num_dims).mean(),
            "active_dims": (mu.detach().var(0, unbiased=False) > ACTIVE_VARIANCE).sum().float(),
        }

    @torch.no_grad()
    def traversal(
        self, x: Tensor, dims: Sequence[int] | None = None, steps: int = 7, span: float = 2.5
    ) -> Tensor:
        """Vary one latent dimension at a time around the posterior mean of the first image.

        Args:
            x: images (N, C, H, W); only x[0] is used.
            dims: latent dimensions to vary; None takes the (up to) 8 with the largest KL.
            steps: images per dimension, offsets evenly spaced in [-span, span].
            span: largest offset, in prior standard deviations.

        Returns:
            (len(dims) * steps, C, H, W) in [-1, 1], one dimension after another.
        """
        mu, logvar = self.encode(x[:1])  # (1, D)
        if dims is None:
            kl = gaussian_kl(mu, logvar)[0]  # (D,)
            dims = kl.topk(min(8, kl.numel())).indices.tolist()
        offsets = torch.linspace(-span, span, steps, device=mu.device)  # (steps,)
        z = mu.repeat(len(dims) * steps, 1)  # (len(dims) * steps, D)
        for i, d in enumerate(dims):
            z[i * steps : (i + 1) * steps, d] += offsets
        return self.decode(z).clamp(-1, 1)

    @torch.no_grad()
    def log_images(
        self, batch: dict, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Image grids for the trainer: inputs, reconstructions (z = mu), prior samples, traversal.

        Args:
            batch: a dict with `pixel_values` (N, C, H, W) in [-1, 1].
            generator: source of the prior samples.
        """
        x = batch["pixel_values"]
        mu, _ = self.encode(x)
        return {
            "inputs": x,
            "reconstructions": self.decode(mu).clamp(-1, 1),
            "samples": self.sample(x.shape[0], generator),
            "traversal": self.traversal(x),
        }
