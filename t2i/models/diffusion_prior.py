"""The unCLIP diffusion prior: a caption's CLIP text embedding -> a CLIP image embedding.

Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents",
section 2.1: a decoder-only transformer reads, in order, the caption's token states, its
pooled text embedding, the diffusion timestep, the noised image embedding and a learned
query, and the output at the query predicts the *clean* image embedding (x0, not the
noise). The noising and the samplers are diffusers' schedulers (DDPM to train; DDIM or
DPM-Solver++ to sample in few steps), configured with `prediction_type="sample"`.

CLIP's embeddings are unit vectors; they are diffused at scale sqrt(embed_dim) so that each
coordinate has about unit variance, like the Gaussian noise (as DALLE2-pytorch's
`image_embed_scale`). Classifier-free guidance: in training the text conditions (token
states and embedding) are replaced by learned null ones with probability `cond_drop_prob`;
at sampling, the conditional and the null predictions of x0 come from one batched pass and
are mixed as x_u + s (x_c - x_u).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from t2i.models.base import T2IModel
from t2i.models.lora import PRIOR_LORA_TARGETS
from t2i.nn.diffusion import check_sampler, guided_denoise
from t2i.nn.transformer import ATTENTION_BACKENDS, Transformer


class DiffusionPrior(T2IModel):
    """A transformer denoiser over CLIP image embeddings, conditioned on the caption.

    Args:
        embed_dim: CLIP's embedding size (text and image embeddings).
        clip_width: width of CLIP's text token states.
        context_length: caption length in tokens (CLIP's).
        dim: transformer width.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over dim.
        dropout: dropout inside the blocks.
        num_train_timesteps: diffusion steps of the training (DDPM) schedule.
        beta_schedule: a diffusers beta schedule ("squaredcos_cap_v2" is the cosine one).
        cond_drop_prob: chance that a training caption is replaced by the null conditions.
        attention: "sdpa" (torch) or "xformers".
    """

    _no_split_modules = ["Block"]  # FSDP's units
    READS = frozenset({"text_states", "text_embeds", "image_embeds"})

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 128,
        clip_width: int = 128,
        context_length: int = 32,
        dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        cond_drop_prob: float = 0.1,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention={attention!r}: use one of {ATTENTION_BACKENDS}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob={cond_drop_prob} must be in [0, 1)")
        self.states_proj = nn.Linear(clip_width, dim)
        self.text_embed_proj = nn.Linear(embed_dim, dim)
        self.image_proj = nn.Linear(embed_dim, dim)
        self.time_proj = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(dim, dim)
        self.null_states = nn.Parameter(0.02 * torch.randn(context_length, dim))
        self.null_text_embed = nn.Parameter(0.02 * torch.randn(dim))
        self.query = nn.Parameter(0.02 * torch.randn(dim))
        self.pos = nn.Parameter(0.02 * torch.randn(context_length + 4, dim))
        self.transformer = Transformer(dim, depth, heads, mlp_ratio, dropout, attention)
        self.out = nn.Linear(dim, embed_dim)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="sample",
            clip_sample=False,
        )

    @property
    def scale(self) -> float:
        """The norm at which embeddings are diffused: sqrt(embed_dim)."""
        return math.sqrt(self.config.embed_dim)

    def conditions(
        self, text_embeds: Tensor, text_states: Tensor, drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The caption as transformer inputs: states (B, L, dim) and embedding (B, dim), with
        the rows `drop` (B,) marks (in training: at random) replaced by the null ones."""
        if text_states.shape[1:] != (self.config.context_length, self.config.clip_width):
            raise ValueError(
                f"text_states of shape {tuple(text_states.shape)}; this prior reads (B, "
                f"{self.config.context_length}, {self.config.clip_width})"
            )
        if text_embeds.shape[1:] != (self.config.embed_dim,):
            raise ValueError(
                f"text_embeds of shape {tuple(text_embeds.shape)}; this prior reads (B, "
                f"{self.config.embed_dim})"
            )
        dtype = self.states_proj.weight.dtype
        states = self.states_proj(text_states.to(dtype))
        embed = self.text_embed_proj(text_embeds.to(dtype))
        if drop is None:
            p = self.config.cond_drop_prob if self.training else 0.0
            drop = torch.rand(states.shape[0], device=states.device) < p
        states = torch.where(drop[:, None, None], self.null_states.to(dtype), states)
        embed = torch.where(drop[:, None], self.null_text_embed.to(dtype), embed)
        return states, embed

    def lora_defaults(self) -> tuple[str, tuple[str, ...]]:
        """LoRA in every transformer block's attention and MLP projections."""
        return "transformer", PRIOR_LORA_TARGETS

    def forward(self, noisy: Tensor, timesteps: Tensor, states: Tensor, embed: Tensor) -> Tensor:
        """The predicted clean embedding (B, embed_dim), at scale sqrt(embed_dim).

        Args:
            noisy: (B, embed_dim) noised image embeddings.
            timesteps: (B,) diffusion steps.
            states: (B, L, dim) caption states from `conditions`.
            embed: (B, dim) caption embedding from `conditions`.
        """
        t = self.time_embed(self.time_proj(timesteps).to(states.dtype))  # (B, dim)
        b = states.shape[0]
        tokens = [embed, t, self.image_proj(noisy.to(states.dtype)), self.query.expand(b, -1)]
        x = torch.cat([states, torch.stack(tokens, dim=1)], dim=1) + self.pos  # (B, L + 4, dim)
        return self.out(self.transformer(x)[:, -1])

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Mean squared error of the predicted clean image embedding (at scale sqrt(D)).

        Args:
            batch: `image_embeds` (B, D), `text_embeds` (B, D) and `text_states` (B, L, W).
        """
        x0 = F.normalize(batch["image_embeds"].float(), dim=-1) * self.scale
        noise = torch.randn_like(x0)
        steps = self.config.num_train_timesteps
        t = torch.randint(0, steps, (x0.shape[0],), device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        states, embed = self.conditions(batch["text_embeds"], batch["text_states"])
        pred = self(noisy, t, states, embed).float()
        mse = F.mse_loss(pred, x0)
        cosine = F.cosine_similarity(pred, x0, dim=-1).mean().detach()
        return {"loss": mse, "mse": mse.detach(), "cosine_to_target": cosine}

    @torch.no_grad()
    def sample(
        self,
        text_embeds: Tensor,
        text_states: Tensor,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 25,
        sampler: str = "ddim",
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_candidates: int = 1,
        negative_embeds: Tensor | None = None,
        negative_states: Tensor | None = None,
    ) -> Tensor:
        """Unit-norm image embeddings (B, embed_dim) for a batch of captions.

        Args:
            text_embeds: (B, embed_dim) CLIP text embeddings.
            text_states: (B, L, clip_width) CLIP token states.
            guidance_scale: classifier-free guidance s; 1 uses the conditional model alone.
            num_inference_steps: denoising steps.
            sampler: "ddim" (eta 0: deterministic given the first noise) or "dpm"
                (DPM-Solver++).
            generator: the source of the starting noise: one, or one per caption (which
                draws that caption's candidates).
            num_candidates: draws per caption; the one closest (cosine) to the caption's
                text embedding is kept (DALL-E 2 keeps the best of 2).
            negative_embeds: (B, embed_dim) a negative prompt's CLIP text embeddings, with
                `negative_states` (B, L, clip_width): guidance steers away from them instead
                of from the null condition.
            negative_states: see `negative_embeds`.
        """
        check_sampler(sampler)
        if (negative_embeds is None) != (negative_states is None):
            raise ValueError("a negative prompt needs both its text embeddings and its states")
        negative = None
        if negative_embeds is not None:
            negative = (
                negative_embeds.repeat_interleave(num_candidates, dim=0),
                negative_states.repeat_interleave(num_candidates, dim=0),
            )
        if isinstance(generator, list | tuple):  # each caption's candidates from its own
            generator = [g for g in generator for _ in range(num_candidates)]
        embeds = self._denoise(
            text_embeds.repeat_interleave(num_candidates, dim=0),
            text_states.repeat_interleave(num_candidates, dim=0),
            guidance_scale,
            num_inference_steps,
            sampler,
            generator,
            negative,
        )
        if num_candidates == 1:
            return embeds
        b = text_embeds.shape[0]
        candidates = embeds.view(b, num_candidates, -1)
        sims = torch.einsum("bkd,bd->bk", candidates, F.normalize(text_embeds.float(), dim=-1))
        return candidates[torch.arange(b), sims.argmax(dim=1)]

    def _denoise(
        self,
        text_embeds: Tensor,
        text_states: Tensor,
        guidance_scale: float,
        num_inference_steps: int,
        sampler: str,
        generator: torch.Generator | list[torch.Generator] | None,
        negative: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The sampling loop: noise -> clean embedding, guided (away from the null conditions,
        or from `negative`: a negative prompt's (embeds, states)), unit-norm (B, D)."""
        b = text_embeds.shape[0]
        keep = torch.zeros(b, dtype=torch.bool, device=text_embeds.device)
        states, embed = self.conditions(text_embeds, text_states, drop=keep)
        if guidance_scale != 1.0:  # one batch: conditional rows, then the null conditions
            if negative is not None:
                null_states, null_embed = self.conditions(*negative, drop=keep)
            else:
                null_states, null_embed = self.conditions(text_embeds, text_states, drop=~keep)
            states, embed = torch.cat([states, null_states]), torch.cat([embed, null_embed])
        x = guided_denoise(
            lambda inp, steps: self(inp, steps, states, embed),
            self.scheduler.config,
            (b, self.config.embed_dim),
            guidance_scale,
            num_inference_steps,
            sampler,
            generator,
            keep.device,
        )
        return F.normalize(x, dim=-1)
