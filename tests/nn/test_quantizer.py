"""The vector quantizer: lookup invariants, where each loss term sends its gradient, the EMA
update against a hand computation, and recovery from a collapsed codebook."""

import pytest
import torch

from t2i.nn import VectorQuantizer, code_statistics, kmeans


def features(n: int = 2, dim: int = 4, side: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, side, side, generator=g)


@pytest.mark.parametrize(
    "options",
    [{}, {"ema_update": True}, {"use_cosine_sim": True}, {"codebook_dim": 2}],
    ids=["plain", "ema", "cosine", "low-dim"],
)
def test_shapes_dtypes_and_lookup_invariant(options):
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16, **options).eval()
    z = features()
    out = vq(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    assert out.indices.shape == (2, 3, 3) and out.indices.dtype == torch.int64
    assert torch.equal(out.quantized, vq.lookup(out.indices))  # quantize(x) == lookup(indices(x))
    assert 1.0 <= float(out.perplexity) <= 16.0 and 0 < float(out.usage) <= 1.0


def test_indices_are_the_nearest_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8).eval()
    z = features()
    x = z.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(x, vq.embed.detach()).argmin(1)
    assert torch.equal(vq(z).indices.flatten(), brute)


def test_cosine_codes_are_unit_norm_and_nearest_by_angle():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, use_cosine_sim=True).eval()
    assert torch.allclose(vq.codebook().norm(dim=1), torch.ones(8))
    z = features()
    x = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, 4), dim=1)
    assert torch.equal(vq(z).indices.flatten(), (x @ vq.codebook().t()).argmax(1))


def test_straight_through_passes_the_gradient_unchanged():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16)
    z = features().requires_grad_(True)
    upstream = torch.randn_like(z)
    (vq(z).quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)  # d quantized / d z = identity
    assert vq.embed.grad is None  # the reconstruction path does not move the codes


def test_codebook_loss_moves_codes_and_commitment_moves_the_encoder():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16)
    z = features().requires_grad_(True)
    vq(z).codebook_loss.backward()
    assert vq.embed.grad.abs().sum() > 0
    assert z.grad is None or z.grad.abs().sum() == 0  # sg[z]: no gradient to the encoder

    vq.zero_grad()
    z = features().requires_grad_(True)
    vq(z).commitment_loss.backward()
    assert z.grad.abs().sum() > 0
    assert vq.embed.grad is None or vq.embed.grad.abs().sum() == 0  # sg[z_q]


def test_loss_weights_beta_the_codebook_and_gamma_the_commitment():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16, beta=1.0, gamma=0.25)
    out = vq(features())
    expected = out.codebook_loss + 0.25 * out.commitment_loss
    torch.testing.assert_close(vq.loss(out), expected)
    torch.testing.assert_close(out.codebook_loss, out.commitment_loss)  # same value, other grads


def test_ema_update_matches_a_hand_computation():
    # K = 2 codes in 1 dimension; four features: three nearest code 0, one nearest code 1
    vq = VectorQuantizer(1, 2, ema_update=True, decay=0.5, eps=0.0)
    vq.embed.copy_(torch.tensor([[0.0], [10.0]]))
    vq.embed_avg.copy_(torch.tensor([[0.0], [10.0]]))
    vq.cluster_size.copy_(torch.tensor([1.0, 1.0]))
    z = torch.tensor([1.0, 2.0, 3.0, 9.0]).view(1, 1, 2, 2)
    out = vq.train()(z)
    assert out.indices.flatten().tolist() == [0, 0, 0, 1]
    assert float(out.codebook_loss) == 0.0  # EMA replaces the codebook term
    # N <- 0.5 N + 0.5 n: [0.5 + 1.5, 0.5 + 0.5]; m <- 0.5 m + 0.5 sum: [0 + 3, 5 + 4.5]
    torch.testing.assert_close(vq.cluster_size, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(vq.embed_avg, torch.tensor([[3.0], [9.5]]))
    torch.testing.assert_close(vq.embed, torch.tensor([[1.5], [9.5]]))  # e = m / N


def test_ema_laplace_smoothing_keeps_unused_codes_finite():
    vq = VectorQuantizer(2, 4, ema_update=True, decay=0.0, eps=1e-5)
    vq.train()(torch.zeros(1, 2, 2, 2) + 0.5)  # every feature on one code
    assert torch.isfinite(vq.embed).all()


def test_eval_mode_changes_nothing():
    vq = VectorQuantizer(4, 8, ema_update=True, threshold_ema_dead_code=2.0).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(features())
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k


def clustered_data(seed: int = 0) -> torch.Tensor:
    """256 features around sixteen fixed centers in 2-D, as a (4, 2, 8, 8) feature map."""
    centers = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 3
    noise = 0.05 * torch.randn(256, 2, generator=torch.Generator().manual_seed(seed))
    return (centers[torch.arange(256) % 16] + noise).view(4, 8, 8, 2).permute(0, 3, 1, 2)


def collapsed(**options) -> VectorQuantizer:
    """A quantizer whose sixteen codes all sit in one place: the mean of the data."""
    vq = VectorQuantizer(2, 16, decay=0.8, **options)
    mean = clustered_data().mean(dim=(0, 2, 3))
    vq.embed.data.copy_(mean.expand(16, 2))
    if vq.ema_update:
        vq.embed_avg.copy_(mean.expand(16, 2))
    return vq


def test_a_collapsed_codebook_stays_collapsed_without_help():
    vq = collapsed().train()
    for step in range(30):
        out = vq(clustered_data(seed=step))
    assert float(out.usage) == 1 / 16 and float(out.perplexity) == pytest.approx(1.0)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_recovers_a_collapsed_codebook(ema):
    torch.manual_seed(0)
    vq = collapsed(ema_update=ema, threshold_ema_dead_code=0.5).train()
    first = vq(clustered_data(seed=0))
    for step in range(1, 30):
        out = vq(clustered_data(seed=step))
    assert float(first.usage) == 1 / 16
    assert float(out.usage) >= 0.75 and float(out.perplexity) > 10


def test_kmeans_init_recovers_a_collapsed_codebook():
    torch.manual_seed(0)
    vq = collapsed(kmeans_init=True, kmeans_iters=20).train()
    out = vq(clustered_data())
    assert bool(vq.initted)
    assert float(out.usage) >= 0.75 and float(out.perplexity) > 10


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centers = [[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]]
    x = torch.cat([torch.randn(50, 2) * 0.1 + torch.tensor(c) for c in centers])
    centroids = kmeans(x, 3, iters=20)
    for c in centers:
        assert (centroids - torch.tensor(c)).norm(dim=1).min() < 0.1


def test_code_statistics():
    perplexity, usage = code_statistics(torch.tensor([0, 1, 2, 3]), 8)
    assert float(perplexity) == pytest.approx(4.0) and float(usage) == 0.5
    perplexity, usage = code_statistics(torch.tensor([2, 2, 2]), 8)
    assert float(perplexity) == pytest.approx(1.0) and float(usage) == 1 / 8
