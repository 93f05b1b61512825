"""Shapes and invariants of the conv blocks and the caption encoder."""

import pytest
import torch

from t2i.nn import (
    CaptionEncoder,
    Decoder,
    Downsample,
    Encoder,
    ResBlock,
    Upsample,
    VectorDecoder,
    VectorEncoder,
)


def test_block_shapes():
    x = torch.randn(2, 8, 16, 16)
    assert ResBlock(8, 12)(x).shape == (2, 12, 16, 16)
    assert Downsample(8)(x).shape == (2, 8, 8, 8)
    assert Upsample(8)(x).shape == (2, 8, 32, 32)


def test_encoder_decoder_shapes():
    x = torch.randn(2, 3, 16, 16)
    h = Encoder(3, (8, 16), 4)(x)
    assert h.shape == (2, 4, 4, 4)
    assert Decoder(4, [8, 16], 3)(h).shape == (2, 3, 16, 16)
    v = VectorEncoder(16, 3, (8, 16), 10)(x)
    assert v.shape == (2, 10)
    assert VectorDecoder(16, 10, (8, 16), 3)(v).shape == (2, 3, 16, 16)


def test_vector_encoder_rejects_indivisible_size():
    with pytest.raises(ValueError, match="divisible"):
        VectorEncoder(20, 3, (8, 16, 32), 10)


def test_resblock_identity_skip_when_channels_match():
    block = ResBlock(8, 8)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(block(x), x)


def test_caption_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = CaptionEncoder(vocab_size=100, context_length=12, width=32, layers=2).eval()
    ids = torch.tensor([[98, 5, 7, 99, 0, 0], [98, 3, 99, 0, 0, 0]])
    out = enc(ids)
    assert out.shape == (2, 32)
    longer = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)  # more pad columns
    torch.testing.assert_close(enc(longer), out, rtol=1e-5, atol=1e-5)
    other = ids.clone()
    other[1, 1] = 4  # a different real token changes only that caption
    out2 = enc(other)
    torch.testing.assert_close(out2[0], out[0])
    assert not torch.allclose(out2[1], out[1])


def test_caption_encoder_rejects_long_input():
    enc = CaptionEncoder(vocab_size=100, context_length=4, width=16, layers=1)
    with pytest.raises(ValueError, match="context_length"):
        enc(torch.ones(1, 5, dtype=torch.long))
