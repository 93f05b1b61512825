"""A small caption encoder: token + learned position embeddings, a pre-norm Transformer encoder
(Vaswani et al. 2017; pre-norm as in Xiong et al. 2020) and a masked mean over the real tokens.

It reads open_clip BPE ids (pad id 0), so any model conditioned on captions can share the
tokenizer of `t2i.data.text`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PAD_ID = 0  # open_clip's SimpleTokenizer pads with 0
VOCAB_SIZE = 49408  # open_clip's BPE vocabulary, <start_of_text> = 49406, <end_of_text> = 49407


class CaptionEncoder(nn.Module):
    """Token ids (B, L) -> one caption vector (B, width).

    Args:
        vocab_size: token vocabulary size (`VOCAB_SIZE` for open_clip's BPE).
        context_length: longest token sequence the position table covers.
        width: embedding width.
        layers: Transformer encoder layers.
        heads: attention heads; must divide `width`.
    """

    def __init__(
        self, vocab_size: int, context_length: int, width: int, layers: int, heads: int = 4
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.transformer = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        if length > self.position_embedding.shape[0]:
            raise ValueError(
                f"input_ids have {length} tokens; context_length is "
                f"{self.position_embedding.shape[0]}"
            )
        pad = input_ids == PAD_ID  # (B, L)
        h = self.token_embedding(input_ids) + self.position_embedding[:length]  # (B, L, W)
        h = self.transformer(h, src_key_padding_mask=pad)  # (B, L, W)
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, W)
