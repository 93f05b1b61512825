"""The adversarial term of VQGAN, an option of the autoencoders (`disc_weight` > 0).

Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis",
section 3.1: a patch discriminator D (`t2i.nn.PatchDiscriminator`) learns to tell images x
from their reconstructions x_hat with the hinge loss, and the autoencoder adds
lambda * L_G, L_G = -mean D(x_hat), to its reconstruction loss L_rec, with the adaptive weight
of their eq. 7 on the decoder's last layer W_L,

    lambda = ||grad_{W_L} L_rec|| / (||grad_{W_L} L_G|| + 1e-4), clamped to [0, 1e4],

detached and multiplied by `disc_weight`. The term starts after `disc_start` training batches
(their `adopt_weight`); before that the discriminator is not even evaluated. Rombach et al.
2022 ("High-Resolution Image Synthesis with Latent Diffusion Models", appendix G) train
their KL autoencoder the same way.

The trainer steps one AdamW over all the parameters, so both players' losses go into one sum
without crossing over: D's hinge loss reads the reconstruction detached (no gradient into the
autoencoder), and the generator term evaluates D with detached weights (no gradient into D).

The discriminator and its step count are training state. A training checkpoint (the model's
state dict) keeps them, so a resumed run goes on where it stopped; `save_pretrained` leaves
them out (the shipped model is the autoencoder), and `from_pretrained` builds a fresh
discriminator from the options its config keeps, its step count at 0, for fine-tuning.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from t2i.models.base import T2IModel
from t2i.nn import PatchDiscriminator, hinge_loss

MAX_ADAPTIVE_WEIGHT = 1e4  # eq. 7's lambda is clamped to [0, 1e4]
ADAPTIVE_EPS = 1e-4  # keeps lambda finite where L_G's gradient vanishes

# set while `from_pretrained` builds a model: its saved weights hold no discriminator, so
# none is built inside diffusers' loader (which would leave it on the meta device, unfilled,
# and warn about the missing weights); a fresh one is built once the weights are in
_LOADING = contextvars.ContextVar("t2i_adversarial_loading", default=False)


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """VQGAN's eq. 7: ||grad rec_loss|| / (||grad g_loss|| + 1e-4), the gradients taken with
    respect to `last_layer`, clamped to [0, 1e4] and detached (a scalar).

    Args:
        rec_loss: the reconstruction loss (a scalar with a graph through `last_layer`).
        g_loss: the generator's adversarial loss (likewise).
        last_layer: the weight of the decoder's last layer.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + ADAPTIVE_EPS)
    return weight.clamp(0.0, MAX_ADAPTIVE_WEIGHT).detach()


class AdversarialMixin(T2IModel, abc.ABC):
    """The VQGAN adversarial term for an autoencoder whose config has `image_size`,
    `disc_weight` (0 = off), `disc_start`, `disc_layers` and `disc_channels`.

    A subclass calls `_init_adversarial()` last in `__init__`, names its decoder's last
    layer (`decoder_last_layer`) and adds `adversarial_losses(...)` to its training losses.
    Off, the model has no discriminator, no step count and the state dict it had before.
    """

    def _init_adversarial(self) -> None:
        """Build the discriminator and its step count when `disc_weight` > 0. Called last,
        so the autoencoder's own initialisation draws the same random numbers as without."""
        self.discriminator: PatchDiscriminator | None = None
        if self.config.disc_weight > 0 and not _LOADING.get():
            self._build_discriminator()

    def _build_discriminator(self) -> None:
        """A fresh discriminator over the decoder's output, and the step count at 0."""
        size, layers = self.config.image_size, self.config.disc_layers
        if PatchDiscriminator.grid_size(size, layers) < 1:
            raise ValueError(
                f"disc_layers={layers} needs images of at least {3 * 2**layers} px "
                f"(image_size={size})"
            )
        last = self.decoder_last_layer  # (C_out, C, k, k): C_out image channels
        self.discriminator = PatchDiscriminator(last.shape[0], self.config.disc_channels, layers)
        self.discriminator.to(device=last.device, dtype=last.dtype).train(self.training)
        # training batches seen (disc_start counts them); persistent: resuming keeps it
        self.register_buffer("disc_step", torch.zeros((), dtype=torch.long, device=last.device))

    @property
    def may_leave_parameters_unused(self) -> bool:
        """Whether a training step may leave parameters without a gradient (the discriminator
        before `disc_start`): DDP must then look for them (the trainer reads this)."""
        return self.discriminator is not None and self.config.disc_start > 0

    @property
    @abc.abstractmethod
    def decoder_last_layer(self) -> Tensor:
        """The weight of the decoder's last layer (eq. 7's W_L)."""

    def adversarial_losses(
        self, images: Tensor, reconstructions: Tensor, rec_loss: Tensor
    ) -> dict[str, Tensor]:
        """The adversarial terms of a training batch: `loss` (lambda * L_G + L_D, to add to
        the autoencoder's loss) and the logged `g_loss`, `d_loss`, `d_weight` (lambda),
        `logits_real` and `logits_fake` (mean logits); {} when off, in eval mode (the
        validation loss stays the reconstruction's) or before `disc_start`. Counts the
        training batch.

        Args:
            images: the batch, (B, C, H, W) in [-1, 1].
            reconstructions: the decoder's output for it, (B, C, H, W), with its graph.
            rec_loss: the reconstruction loss that lambda balances L_G against.
        """
        if self.discriminator is None or not self.training:
            return {}
        step = int(self.disc_step)
        self.disc_step.add_(1)
        if step < self.config.disc_start:  # adopt_weight: the term is 0, so skip it
            return {}
        g_loss = -self._discriminate_frozen(reconstructions).float().mean()
        d_weight = self.config.disc_weight * adaptive_weight(
            rec_loss, g_loss, self.decoder_last_layer
        )
        logits_real = self.discriminator(images.detach())  # (B, 1, h, w)
        logits_fake = self.discriminator(reconstructions.detach())
        d_loss = hinge_loss(logits_real, logits_fake)
        return {
            "loss": d_weight * g_loss + d_loss,
            "g_loss": g_loss.detach(),
            "d_loss": d_loss.detach(),
            "d_weight": d_weight,
            "logits_real": logits_real.detach().float().mean(),
            "logits_fake": logits_fake.detach().float().mean(),
        }

    def _discriminate_frozen(self, images: Tensor) -> Tensor:
        """D's logits with its weights detached: gradients reach the images, not D."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, frozen, (images,))

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Save the autoencoder as any diffusers model, without the discriminator and its
        step count (training state; the config keeps the options)."""
        with self._without_training_state():
            super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """Load a saved autoencoder (`T2IModel.from_pretrained`), then build a fresh
        discriminator when its config asks for one (none was saved), on a fork of the
        global random state (loading draws what it draws without the option)."""
        token = _LOADING.set(True)
        try:
            model = super().from_pretrained(*args, **kwargs)
        finally:
            _LOADING.reset(token)
        if model.config.disc_weight > 0:
            with torch.random.fork_rng(devices=[]):  # no more random numbers than without
                model._build_discriminator()
        return model

    @contextlib.contextmanager
    def _without_training_state(self) -> Iterator[None]:
        """Take the discriminator and its step count out of the model for the block."""
        discriminator = self._modules.pop("discriminator", None)
        step = self._buffers.pop("disc_step", None)
        try:
            yield
        finally:
            if discriminator is not None:
                self._modules["discriminator"] = discriminator
            if step is not None:
                self._buffers["disc_step"] = step
