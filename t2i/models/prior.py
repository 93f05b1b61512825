"""The DALL-E prior: a decoder-only transformer over [caption ; image codes].

Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation": the caption's tokens and the
image's codes (from a discrete tokenizer) form one sequence, modelled autoregressively
with causal attention; the loss weighs the text and image cross-entropies apart (1/8 and
7/8 in the paper). Two ways to read the caption, set by `text_encoder`:

- "embed": the prior's own embedding of the CLIP BPE ids, tied to a text output head, and
  the text tokens are modelled too (the paper's setting);
- "clip": the frozen CLIP text tower's per-token states, projected, as a prefix (the batch
  carries them as `text_states`); nothing is predicted over the text;
- "clip_image": no caption at all but a CLIP image embedding (`image_embeds`), projected
  into `context_length` prefix vectors: the prior is then unCLIP's decoder from an image
  embedding to the codes of an image that has it (Ramesh et al. 2022 project the embedding
  into four extra context tokens of their decoder the same way).

Classifier-free guidance (Ho & Salimans 2022): in training the whole caption prefix is
replaced, with probability `cond_drop_prob`, by a learned null prefix; at sampling, the
conditional and the null-prefix logits come from one batched forward pass and are mixed as
l_u + s (l_c - l_u). Sampling keeps a key/value cache, so each new code costs one
position's work.

Image positions are learned 2-D embeddings (a row and a column table per level); the codes
of a two-level tokenizer (VQ-VAE-2) are read top level first, each in raster order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from t2i.models.base import T2IModel
from t2i.models.lora import PRIOR_LORA_TARGETS
from t2i.nn.sampling import sample_logits
from t2i.nn.text import VOCAB_SIZE
from t2i.nn.transformer import ATTENTION_BACKENDS, Transformer

TEXT_ENCODERS = ("embed", "clip", "clip_image")


Grids = Tensor | tuple[Tensor, ...]


class CodeTransformer(T2IModel):
    """What the DALL-E prior and the masked prior share: a transformer over [caption prefix ;
    image codes], the caption read as `text_encoder` says, a learned null prefix for
    classifier-free guidance, learned 2-D positions of the codes, and the codes of every
    level as one sequence. A subclass's constructor calls `build`."""

    _no_split_modules = ["Block"]  # FSDP's units: each transformer block sharded on its own

    @property
    def reads(self) -> frozenset[str]:
        """The codes, and the caption as `text_encoder` reads it."""
        caption = {"embed": "input_ids", "clip": "text_states", "clip_image": "image_embeds"}
        return frozenset({"image_tokens", caption[self.config.text_encoder]})

    def build(self, num_embeddings: int, causal: bool) -> None:
        """The layers, from the config: the caption's reading, the null prefix, the code
        embedding (`num_embeddings` rows) with its positions, the transformer and the head."""
        c = self.config
        dim = c.dim
        self.grids = [int(g) for g in c.grid_sizes]
        self.image_len = sum(g * g for g in self.grids)
        if c.text_encoder == "embed":
            self.text_embed = nn.Embedding(c.text_vocab_size, dim)
        elif c.text_encoder == "clip":
            self.text_proj = nn.Linear(c.clip_width, dim)
        else:
            self.embed_proj = nn.Linear(c.embed_dim, c.context_length * dim)
        self.text_pos = nn.Parameter(0.02 * torch.randn(c.context_length, dim))
        self.null_text = nn.Parameter(0.02 * torch.randn(c.context_length, dim))
        self.image_embed = nn.Embedding(num_embeddings, dim)
        rows, cols = _grid_positions(self.grids)
        self.register_buffer("row_index", rows, persistent=False)  # (N,)
        self.register_buffer("col_index", cols, persistent=False)  # (N,)
        self.image_rows = nn.Embedding(sum(self.grids), dim)
        self.image_cols = nn.Embedding(sum(self.grids), dim)
        self.transformer = Transformer(
            dim, c.depth, c.heads, c.mlp_ratio, c.dropout, c.attention, causal=causal
        )
        self.image_head = nn.Linear(dim, c.num_tokens)
        self.apply(_init_weights)

    # ---- sequences -------------------------------------------------------------------------

    def flatten(self, image_tokens: Grids) -> Tensor:
        """Grids (N, g, g), one per level, -> one sequence (N, image_len), top level first."""
        grids = image_tokens if isinstance(image_tokens, (tuple, list)) else (image_tokens,)
        if [tuple(g.shape[1:]) for g in grids] != [(s, s) for s in self.grids]:
            raise ValueError(
                f"image_tokens of shapes {[tuple(g.shape[1:]) for g in grids]}; this prior "
                f"models grids of sides {self.grids}"
            )
        return torch.cat([g.flatten(1) for g in grids], dim=1)

    def lora_defaults(self) -> tuple[str, tuple[str, ...]]:
        """LoRA in every transformer block's attention and MLP projections."""
        return "transformer", PRIOR_LORA_TARGETS

    def unflatten(self, tokens: Tensor) -> Grids:
        """One sequence (N, image_len) -> a grid (N, g, g), or a tuple of grids per level."""
        parts = tokens.split([g * g for g in self.grids], dim=1)
        grids = tuple(p.view(-1, g, g) for p, g in zip(parts, self.grids, strict=True))
        return grids[0] if len(grids) == 1 else grids

    def embed_text(
        self,
        input_ids: Tensor | None,
        text_states: Tensor | None,
        image_embeds: Tensor | None = None,
    ) -> Tensor:
        """The condition prefix (B, L, dim): from BPE ids ("embed"), CLIP token states
        ("clip") or a CLIP image embedding ("clip_image")."""
        mode = self.config.text_encoder
        if mode == "embed":
            if input_ids is None:
                raise ValueError("text_encoder='embed' needs input_ids")
            x = self.text_embed(input_ids)
        elif mode == "clip":
            if text_states is None:
                raise ValueError(
                    "text_encoder='clip' needs text_states, the CLIP text tower's token "
                    "states (B, context_length, clip_width)"
                )
            x = self.text_proj(text_states.to(self.text_proj.weight.dtype))
        else:
            if image_embeds is None or image_embeds.shape[1:] != (self.config.embed_dim,):
                have = None if image_embeds is None else tuple(image_embeds.shape)
                raise ValueError(
                    f"text_encoder='clip_image' needs image_embeds, CLIP image embeddings "
                    f"(B, {self.config.embed_dim}); got {have}"
                )
            unit = F.normalize(image_embeds.float(), dim=-1).to(self.embed_proj.weight.dtype)
            x = self.embed_proj(unit).view(len(unit), self.config.context_length, -1)
        if x.shape[1] != self.config.context_length:
            raise ValueError(
                f"captions of {x.shape[1]} tokens; this prior reads {self.config.context_length}"
            )
        return x + self.text_pos

    def embed_image(self, tokens: Tensor, start: int = 0) -> Tensor:
        """Codes (B, n) at sequence positions start.. -> (B, n, dim), with 2-D positions."""
        pos = slice(start, start + tokens.shape[1])
        return (
            self.image_embed(tokens)
            + self.image_rows(self.row_index[pos])
            + self.image_cols(self.col_index[pos])
        )

    def drop_captions(self, prefix: Tensor, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Replace captions with the null prefix: the rows `drop` (B,) marks, or in training
        each row with probability cond_drop_prob.

        Returns:
            the prefix (B, L, dim) and which rows were dropped (B,).
        """
        if drop is None:
            p = self.config.cond_drop_prob if self.training else 0.0
            drop = torch.rand(prefix.shape[0], device=prefix.device) < p
        null = self.null_text.to(prefix.dtype).expand_as(prefix)
        return torch.where(drop[:, None, None], null, prefix), drop


class DALLEPrior(CodeTransformer):
    """An autoregressive transformer prior over caption tokens and image codes.

    Args:
        num_tokens: the image tokenizer's codebook size.
        grid_sizes: the side of each level's code grid ([8] for an 8 x 8 tokenizer; [top,
            bottom] for VQ-VAE-2).
        context_length: caption length in tokens (the CLIP tokenizer's); for "clip_image",
            the prefix vectors the image embedding is projected into.
        text_encoder: "embed" (own embedding of the BPE ids, text tokens modelled), "clip"
            (frozen CLIP token states as a prefix) or "clip_image" (a CLIP image embedding
            as a prefix: the unCLIP decoder).
        text_vocab_size: the BPE vocabulary ("embed").
        clip_width: width of the CLIP token states ("clip").
        embed_dim: size of the CLIP image embedding ("clip_image").
        dim: transformer width.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over dim.
        dropout: dropout inside the blocks.
        text_loss_weight: weight of the text cross-entropy ("embed").
        image_loss_weight: weight of the image cross-entropy.
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
        embed_dim: int = 128,
        dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        text_loss_weight: float = 0.125,
        image_loss_weight: float = 0.875,
        cond_drop_prob: float = 0.1,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        check_config(text_encoder, attention, cond_drop_prob, TEXT_ENCODERS)
        self.build(num_tokens, causal=True)

    def _hidden(self, prefix: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced states: [prefix ; codes[:-1]] -> (B, L + N - 1, dim); position
        L - 1 + i reads the caption and codes < i and predicts code i."""
        return self.transformer(torch.cat([prefix, self.embed_image(tokens[:, :-1])], dim=1))

    def forward(
        self,
        tokens: Tensor,
        input_ids: Tensor | None = None,
        text_states: Tensor | None = None,
        drop: Tensor | None = None,
        image_embeds: Tensor | None = None,
    ) -> Tensor:
        """Logits of every code given the caption and the codes before it: (B, N, K).

        Args:
            tokens: (B, image_len) codes (`flatten` of the grids).
            input_ids: (B, L) caption tokens ("embed").
            text_states: (B, L, clip_width) CLIP token states ("clip").
            drop: (B,) True where the caption is replaced by the null prefix (unconditional).
            image_embeds: (B, embed_dim) CLIP image embeddings ("clip_image").
        """
        prefix = self.embed_text(input_ids, text_states, image_embeds)
        if drop is not None:
            prefix, _ = self.drop_captions(prefix, drop)
        h = self._hidden(prefix, tokens)
        return self.image_head(h[:, self.config.context_length - 1 :])

    # ---- training --------------------------------------------------------------------------

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Weighted text and image cross-entropies (nats per token).

        Args:
            batch: `image_tokens` (a grid per level), `input_ids` (B, L) and, for
                text_encoder="clip", `text_states` (B, L, clip_width); for "clip_image",
                `image_embeds` (B, embed_dim).
        """
        tokens = self.flatten(batch["image_tokens"])  # (B, N)
        input_ids = batch.get("input_ids")
        prefix = self.embed_text(input_ids, batch.get("text_states"), batch.get("image_embeds"))
        prefix, drop = self.drop_captions(prefix)
        h = self._hidden(prefix, tokens)  # (B, L + N - 1, dim)
        L = self.config.context_length
        logits = self.image_head(h[:, L - 1 :])  # (B, N, K)
        image_ce = F.cross_entropy(logits.float().transpose(1, 2), tokens)
        out = {"image_ce": image_ce, "image_bits_per_token": image_ce / math.log(2.0)}
        loss = self.config.image_loss_weight * image_ce
        if self.config.text_encoder == "embed":
            out["text_ce"] = self._text_ce(h[:, : L - 1], input_ids, drop)
            loss = loss + self.config.text_loss_weight * out["text_ce"]
        out["loss"] = loss
        return out

    def _text_ce(self, h: Tensor, input_ids: Tensor, drop: Tensor) -> Tensor:
        """Cross-entropy of next caption tokens (ties the head to the text embedding), over
        the real tokens of captions that were not dropped."""
        target = input_ids[:, 1:]  # (B, L-1)
        keep = (target != 0) & ~drop[:, None]
        if not keep.any():
            return h.sum() * 0.0
        logits = h[keep] @ self.text_embed.weight.t()  # (M, V), only where scored
        return F.cross_entropy(logits.float(), target[keep])

    # ---- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        input_ids: Tensor | None = None,
        text_states: Tensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prime: Tensor | None = None,
        use_cache: bool = True,
        callback: Callable[[int, Tensor], None] | None = None,
        image_embeds: Tensor | None = None,
        negative_input_ids: Tensor | None = None,
        negative_text_states: Tensor | None = None,
    ) -> Tensor:
        """Draw the image codes for a batch of captions, one code per step: (B, image_len).

        Args:
            input_ids: (B, L) caption tokens ("embed").
            text_states: (B, L, clip_width) CLIP token states ("clip").
            guidance_scale: classifier-free guidance s; 1 samples the conditional model alone.
            temperature: softmax temperature (0 = greedy).
            top_k: keep only the k most likely codes at each step.
            top_p: keep only the nucleus of probability top_p at each step.
            generator: the source of randomness: one, or one per row of the batch.
            prime: (B, P) first codes to keep (DALL-E's priming with an image's top rows).
            use_cache: keep keys and values (one position's work per step); False recomputes
                the whole sequence at every step (for checks and benchmarks).
            callback: called as callback(i, codes so far (B, i + 1)) after each new code; it
                may return the codes with the newest one changed (None: unchanged).
            image_embeds: (B, embed_dim) CLIP image embeddings ("clip_image").
            negative_input_ids: (B, L) a negative prompt's tokens ("embed"): guidance steers
                away from it instead of from the unconditional (null) prefix.
            negative_text_states: (B, L, clip_width) a negative prompt's CLIP token states
                ("clip").
        """
        prefix = self.embed_text(input_ids, text_states, image_embeds)  # (B, L, dim)
        b = prefix.shape[0]
        guided = guidance_scale != 1.0
        negative = negative_input_ids is not None or negative_text_states is not None
        if guided:  # one batch: conditional rows, then null-prefix (or negative) rows
            if negative:
                uncond = self.embed_text(negative_input_ids, negative_text_states)
            else:
                uncond = self.null_text.to(prefix.dtype).expand_as(prefix)
            prefix = torch.cat([prefix, uncond])
        tokens = prefix.new_zeros(b, 0, dtype=torch.long) if prime is None else prime.long()
        if tokens.shape[1] >= self.image_len:
            raise ValueError(f"prime has {tokens.shape[1]} codes; the image has {self.image_len}")
        pair = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)
        x = torch.cat([prefix, self.embed_image(pair(tokens))], dim=1)
        cache = self.transformer.new_cache(x.shape[1] + self.image_len) if use_cache else None
        start = tokens.shape[1]
        for i in range(start, self.image_len):
            if cache is not None and i == start:  # repeated prefixes computed once
                h = self.transformer.prefill(x, cache)[:, -1]
            else:
                h = self.transformer(x, cache)[:, -1]  # (B or 2B, dim)
            logits = self.image_head(h).float()
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            code = sample_logits(logits, temperature, top_k, top_p, generator)  # (B,)
            tokens = torch.cat([tokens, code[:, None]], dim=1)
            if callback is not None:  # it may change the code just drawn (None: unchanged)
                changed = callback(i, tokens)
                if changed is not None:
                    if not torch.equal(changed[:, :-1].to(tokens), tokens[:, :-1]):
                        raise ValueError(
                            "callback_on_step_end changed codes drawn before this step; only "
                            "the newest code can change (the earlier ones are in the cache)"
                        )
                    tokens, code = changed.to(tokens), changed[:, -1].to(tokens)
            new = self.embed_image(pair(code[:, None]), start=i)
            x = new if use_cache else torch.cat([x, new], dim=1)
        return tokens

    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch's own codes and samples for its captions, for the trainer to decode.

        Args:
            batch: as for `training_losses`.
            generator: the source of randomness.
        """
        samples = self.sample(
            batch.get("input_ids"),
            batch.get("text_states"),
            generator=generator,
            image_embeds=batch.get("image_embeds"),
        )
        return {"data": batch["image_tokens"], "samples": self.unflatten(samples)}


def check_config(
    text_encoder: str, attention: str, cond_drop_prob: float, encoders: tuple[str, ...]
) -> None:
    """A ValueError naming a text encoder, attention backend or caption-drop chance that a
    code transformer cannot take."""
    if text_encoder not in encoders:
        raise ValueError(f"text_encoder={text_encoder!r}: use one of {encoders}")
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(f"attention={attention!r}: use one of {ATTENTION_BACKENDS}")
    if not 0.0 <= cond_drop_prob < 1.0:
        raise ValueError(f"cond_drop_prob={cond_drop_prob} must be in [0, 1)")


def _grid_positions(grids: list[int]) -> tuple[Tensor, Tensor]:
    """Row and column table indices of every code, level by level (each level has its own
    rows of the tables): two (N,) long tensors."""
    rows, cols, offset = [], [], 0
    for g in grids:
        r, c = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        rows.append(r.flatten() + offset)
        cols.append(c.flatten() + offset)
        offset += g
    return torch.cat(rows), torch.cat(cols)


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
