"""The masked prior: a bidirectional transformer that fills in masked image codes, many at once.

Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer", and Chang et al. 2023,
"Muse: Text-To-Image Generation via Masked Generative Transformers". The sequence is the
one the DALL-E prior reads, [caption prefix ; image codes], but attention is bidirectional
and an image code may be the mask token. Training masks a fraction cos(pi/2 r), r ~ U(0, 1),
of each image's codes at random positions and scores the cross-entropy of the masked codes
only (MaskGIT's eq. 1 with its cosine schedule); a caption is replaced by the learned null
prefix with probability `cond_drop_prob`, for classifier-free guidance (Muse, section 2.6).

Sampling starts from all codes masked and runs N steps (diffusers' `AmusedScheduler`): each
step predicts every masked code at once, keeps the most confident by the cosine schedule,
with Gumbel noise on the confidences annealed from `choice_temperature` to 0, and masks the
rest again. N steps of a whole sequence replace the image_len steps of the autoregressive
prior. Inpainting is the same loop started from an image's codes with only a region masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import AmusedScheduler
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from t2i.models.prior import CodeTransformer, check_config
from t2i.nn.sampling import filter_logits
from t2i.nn.text import VOCAB_SIZE

TEXT_ENCODERS = ("embed", "clip")


class MaskGITPrior(CodeTransformer):
    """A masked token transformer over caption tokens and image codes.

    Args:
        num_tokens: the image tokenizer's codebook size (the mask token is one more id).
        grid_sizes: the side of each level's code grid ([8] for an 8 x 8 tokenizer).
        context_length: caption length in tokens (the CLIP tokenizer's).
        text_encoder: "embed" (own embedding of the BPE ids) or "clip" (frozen CLIP token
            states as a prefix).
        text_vocab_size: the BPE vocabulary ("embed").
        clip_width: width of the CLIP token states ("clip").
        dim: transformer width.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over dim.
        dropout: dropout inside the blocks.
        cond_drop_prob: chance that a training caption is replaced by the null prefix.
        attention: "sdpa" (torch) or "xformers".
    """

    @register_to_config
    def __init__(
        self,
        num_tokens: int = 512,
        grid_sizes: Sequence[int] = (8,),
        context_length: int = 32,
        text_encoder: str = "clip",
        text_vocab_size: int = VOCAB_SIZE,
        clip_width: int = 128,
        dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cond_drop_prob: float = 0.1,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        check_config(text_encoder, attention, cond_drop_prob, TEXT_ENCODERS)
        self.build(num_tokens + 1, causal=False)  # the last embedding row: the mask token

    @property
    def mask_token_id(self) -> int:
        """The id of the mask token (one past the codebook)."""
        return self.config.num_tokens

    def forward(
        self,
        tokens: Tensor,
        input_ids: Tensor | None = None,
        text_states: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        """Logits of every code given the caption and the unmasked codes: (B, N, K).

        Args:
            tokens: (B, image_len) codes, `mask_token_id` where masked.
            input_ids: (B, L) caption tokens ("embed").
            text_states: (B, L, clip_width) CLIP token states ("clip").
            drop: (B,) True where the caption is replaced by the null prefix (unconditional).
        """
        prefix = self.embed_text(input_ids, text_states)
        if drop is not None:
            prefix, _ = self.drop_captions(prefix, drop)
        return self._logits(prefix, tokens)

    def _logits(self, prefix: Tensor, tokens: Tensor) -> Tensor:
        """[prefix ; codes] -> the image positions' logits (B, N, K)."""
        h = self.transformer(torch.cat([prefix, self.embed_image(tokens)], dim=1))
        return self.image_head(h[:, self.config.context_length :])

    # ---- training --------------------------------------------------------------------------

    def mask_codes(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """MaskGIT's training corruption: each row masks ceil(cos(pi/2 r) N) of its codes,
        r ~ U(0, 1), at random positions (at least one).

        Returns:
            the masked codes (B, N) and where they were masked (B, N) bool.
        """
        b, n = tokens.shape
        ratio = torch.cos(0.5 * math.pi * torch.rand(b, device=tokens.device))  # (B,)
        count = (ratio * n).ceil().clamp(min=1)  # (B,)
        rank = torch.rand(b, n, device=tokens.device).argsort(dim=1).argsort(dim=1)
        masked = rank < count[:, None]
        return tokens.masked_fill(masked, self.mask_token_id), masked

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Cross-entropy of the masked codes (nats per masked code).

        Args:
            batch: `image_tokens` (a grid per level), and `input_ids` (B, L) ("embed") or
                `text_states` (B, L, clip_width) ("clip").
        """
        tokens = self.flatten(batch["image_tokens"])  # (B, N)
        prefix = self.embed_text(batch.get("input_ids"), batch.get("text_states"))
        prefix, _ = self.drop_captions(prefix)
        corrupted, masked = self.mask_codes(tokens)
        logits = self._logits(prefix, corrupted)  # (B, N, K)
        ce = F.cross_entropy(logits[masked].float(), tokens[masked])
        accuracy = (logits[masked].argmax(-1) == tokens[masked]).float().mean()
        return {
            "loss": ce,
            "masked_ce": ce.detach(),
            "masked_bits_per_token": ce.detach() / math.log(2.0),
            "masked_accuracy": accuracy,
        }

    # ---- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        input_ids: Tensor | None = None,
        text_states: Tensor | None = None,
        num_steps: int = 12,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        init_tokens: Tensor | None = None,
        keep: Tensor | None = None,
        choice_temperature: float = 2.0,
        callback: Callable[[int, Tensor], None] | None = None,
        negative_input_ids: Tensor | None = None,
        negative_text_states: Tensor | None = None,
    ) -> Tensor:
        """Draw the image codes for a batch of captions in `num_steps` parallel steps:
        (B, image_len).

        Args:
            input_ids: (B, L) caption tokens ("embed").
            text_states: (B, L, clip_width) CLIP token states ("clip").
            num_steps: the parallel decoding steps (each one forward pass of the batch).
            guidance_scale: classifier-free guidance s; 1 samples the conditional model alone.
            temperature: softmax temperature of the drawn codes (0 = greedy).
            top_k: draw among the k most likely codes.
            top_p: draw within the nucleus of probability top_p.
            generator: the source of randomness: one, or one per row of the batch (row i
                then depends on generator i alone).
            init_tokens: (B, image_len) codes to start from (inpainting); with `keep`.
            keep: (B, image_len) bool, True where init_tokens' codes stay; the rest is
                drawn anew.
            choice_temperature: the Gumbel noise on the confidences at the first step,
                annealed linearly to 0 at the last (MaskGIT's 4.5, aMUSEd's 2).
            callback: called as callback(step, codes (B, image_len), mask id where still
                masked) after each step.
            negative_input_ids: (B, L) a negative prompt's tokens ("embed"): guidance steers
                away from it instead of from the null prefix.
            negative_text_states: (B, L, clip_width) a negative prompt's CLIP token states.
        """
        prefix = self.embed_text(input_ids, text_states)  # (B, L, dim)
        b = prefix.shape[0]
        guided = guidance_scale != 1.0
        if guided:  # one batch: conditional rows, then null-prefix (or negative) rows
            if negative_input_ids is not None or negative_text_states is not None:
                uncond = self.embed_text(negative_input_ids, negative_text_states)
            else:
                uncond = self.null_text.to(prefix.dtype).expand_as(prefix)
            prefix = torch.cat([prefix, uncond])
        tokens, start = self._start(b, prefix.device, init_tokens, keep)
        scheduler = AmusedScheduler(mask_token_id=self.mask_token_id)
        scheduler.set_timesteps(num_steps, temperature=(choice_temperature, 0.0))
        generators = generator if isinstance(generator, list | tuple) else None
        if generators is not None and len(generators) != b:
            raise ValueError(f"{len(generators)} generators for {b} rows")
        for i, t in enumerate(scheduler.timesteps.tolist()):
            pair = torch.cat([tokens, tokens]) if guided else tokens
            logits = self._logits(prefix, pair).float()  # (B or 2B, N, K)
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            logits = self._shape(logits, temperature, top_k, top_p)
            if generators is None:
                tokens = scheduler.step(logits, t, tokens, start, generator).prev_sample
            else:  # each row from its own generator
                rows = [
                    scheduler.step(logits[j : j + 1], t, tokens[j : j + 1], start, g).prev_sample
                    for j, g in enumerate(generators)
                ]
                tokens = torch.cat(rows)
            if callback is not None:  # it may hand back other codes (None: unchanged)
                changed = callback(i, tokens)
                tokens = tokens if changed is None else changed.to(tokens)
        return tokens

    def _start(
        self, b: int, device: torch.device, init_tokens: Tensor | None, keep: Tensor | None
    ) -> tuple[Tensor, float]:
        """The codes sampling starts from, and the fraction of them masked."""
        if (init_tokens is None) != (keep is None):
            raise ValueError("inpainting needs both init_tokens and keep")
        if init_tokens is None:
            return torch.full((b, self.image_len), self.mask_token_id, device=device), 1.0
        if init_tokens.shape != (b, self.image_len) or keep.shape != init_tokens.shape:
            raise ValueError(
                f"init_tokens {tuple(init_tokens.shape)} and keep {tuple(keep.shape)}: both "
                f"must be ({b}, {self.image_len})"
            )
        masked = ~keep.to(device).bool()
        if not masked.any(dim=1).all():
            raise ValueError("keep marks every code of an image: nothing is left to draw")
        tokens = init_tokens.to(device).long().masked_fill(masked, self.mask_token_id)
        return tokens, masked.float().mean().item()

    @staticmethod
    def _shape(
        logits: Tensor, temperature: float, top_k: int | None, top_p: float | None
    ) -> Tensor:
        """Logits whose softmax is the distribution the codes are drawn from: over the
        temperature, filtered to top-k / top-p; at temperature 0, only the argmax."""
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0")
        if temperature == 0:
            best = logits.argmax(-1, keepdim=True)
            return torch.full_like(logits, float("-inf")).scatter(-1, best, 0.0)
        return filter_logits(logits / temperature, top_k, top_p)

    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch's own codes and samples for its captions, for the trainer to decode.

        Args:
            batch: as for `training_losses`.
            generator: the source of randomness.
        """
        samples = self.sample(batch.get("input_ids"), batch.get("text_states"), generator=generator)
        return {"data": batch["image_tokens"], "samples": self.unflatten(samples)}
