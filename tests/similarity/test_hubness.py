"""Hubness statistics against a brute-force count and scipy.stats.skew."""
import numpy as np
import pytest
import scipy.stats
import torch

from kexue.similarity.hubness import hubness, hubness_prior_latents, k_occurrence, skewness


def _brute_force(x, k, cosine=False):
    x = np.asarray(x, dtype=np.float64)
    if cosine:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    counts = np.zeros(len(x), dtype=int)
    for j in range(len(x)):
        d = [np.inf if i == j else np.sum((x[i] - x[j]) ** 2) for i in range(len(x))]
        for i in np.argsort(d)[:k]:
            counts[i] += 1
    return counts


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_k_occurrence_equals_brute_force(metric):
    torch.manual_seed(0)
    x = torch.randn(150, 20)
    ours = k_occurrence(x, 5, metric, chunk=37)  # chunks that do not divide N
    assert np.array_equal(ours.numpy(), _brute_force(x.numpy(), 5, metric == "cosine"))
    assert ours.sum().item() == 5 * 150


def test_skewness_equals_scipy_and_grows_with_dimension():
    torch.manual_seed(0)
    n = k_occurrence(torch.randn(400, 50), 10)
    assert skewness(n) == pytest.approx(scipy.stats.skew(n.numpy()), rel=1e-12)
    low, high = hubness(torch.randn(1000, 2), 10), hubness(torch.randn(1000, 100), 10)
    assert high > low + 0.5  # the post's phenomenon on i.i.d. Gaussian data


def test_hubness_prior_keeps_high_k_occurrence_central_latents():
    g = torch.Generator().manual_seed(0)
    z = hubness_prior_latents(40, 16, k=5, threshold=20, pool=2000, generator=g)
    assert z.shape == (40, 16)
    # hubs lie nearer the centre than typical draws (the truncation-trick connection)
    assert z.norm(dim=1).mean() < torch.randn(2000, 16, generator=g).norm(dim=1).mean() - 0.3
    g = torch.Generator().manual_seed(1)
    pool = torch.randn(2000, 16, generator=g)
    g = torch.Generator().manual_seed(1)
    first = hubness_prior_latents(5, 16, k=5, threshold=20, pool=2000, generator=g)
    counts = k_occurrence(pool, 5)
    assert torch.equal(first, pool[counts > 20][:5])


def test_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        k_occurrence(torch.randn(5, 3), 5)
    with pytest.raises(ValueError, match="metric"):
        k_occurrence(torch.randn(5, 3), 2, "manhattan")
    with pytest.raises(ValueError, match="only 0 latents"):
        hubness_prior_latents(5, 4, k=2, threshold=10 ** 6, pool=50, max_pools=2)
