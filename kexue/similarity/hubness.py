r"""Hubness: the k-occurrence statistic and the hubness-prior latent sampling for GANs
("'维度灾难'之Hubness现象浅析"; Radovanović et al. 2010; Liang et al. 2022, "Exploring and Exploiting
Hubness Priors for High-Quality GAN Latent Sampling").

.. math::
    N_k(x_i) = \#\{\,j \ne i : x_i \in \mathrm{kNN}_k(x_j)\,\},\qquad
    S_{N_k} = \frac{\mathbb E\,(N_k - \mu)^3}{\sigma^3},\quad \mu = \mathbb E N_k = k

In high dimension the nearest-neighbour relation becomes lopsided: points near the centre of the
data are close to *everyone* (the ball around the centre is a vanishing fraction of the volume, so
few points are there, but they are neighbours of many), so a few "hubs" occur in very many k-NN
lists and most points in almost none — N_k becomes right-skewed, S_{N_k} grows with the
(intrinsic) dimension. The post's GAN use: draw a pool of latents z ~ N(0, I), count each one's
N_k within the pool, keep only those with N_k above a threshold — hubs sit in the densest region,
where the generator was trained most, and give better samples (the truncation trick is a crude
version of the same central-clustering effect).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

METRICS = ("euclidean", "cosine")


def k_occurrence(x: Tensor, k: int = 10, metric: str = "euclidean", chunk: int = 1024) -> Tensor:
    """``N_k`` of every row of ``x [N, d]`` within the set itself (self excluded), as int64 ``[N]``.
    ``metric="cosine"`` ranks by cosine similarity. Memory: one ``chunk × N`` distance block at a time."""
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"k_occurrence needs [N >= 2, d] vectors, got shape {tuple(x.shape)}")
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} vectors, got {k}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = x.double()
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    sq = x.pow(2).sum(1)
    counts = torch.zeros(len(x), dtype=torch.long)
    for start in range(0, len(x), chunk):
        q = x[start:start + chunk]
        # squared distances; for unit vectors this ranks exactly like -cosine
        d = sq[start:start + chunk, None] + sq[None, :] - 2 * q @ x.T
        d[torch.arange(len(q)), torch.arange(start, start + len(q))] = float("inf")  # a point is not its own neighbour
        neighbours = d.topk(k, dim=1, largest=False).indices
        counts += torch.bincount(neighbours.flatten(), minlength=len(x))
    return counts


def skewness(values: Tensor) -> float:
    """Population skewness E(v - μ)³ / σ³ (``scipy.stats.skew`` with its default ``bias=True``)."""
    v = values.double()
    centred = v - v.mean()
    std = centred.pow(2).mean().sqrt()
    if std == 0:
        raise ValueError("skewness of a constant is undefined")
    return float(centred.pow(3).mean() / std ** 3)


def hubness(x: Tensor, k: int = 10, metric: str = "euclidean") -> float:
    """S_{N_k}: the skewness of the k-occurrence distribution (0 for no hubs; large and positive with hubs)."""
    return skewness(k_occurrence(x, k, metric))


def hubness_prior_latents(n: int, dim: int, k: int = 5, threshold: int = 50, pool: int = 10000,
                          generator: torch.Generator | None = None, max_pools: int = 1000) -> Tensor:
    """``n`` latents from N(0, I_dim) whose k-occurrence within their pool of ``pool`` draws exceeds
    ``threshold`` (the post's sampler: pools of 10000, k = 5, N_5 > 50). Raises if ``max_pools``
    pools do not yield ``n`` of them."""
    if threshold < 0 or pool <= k:
        raise ValueError(f"need threshold >= 0 and pool > k, got threshold={threshold}, pool={pool}, k={k}")
    kept: list[Tensor] = []
    have = 0
    for _ in range(max_pools):
        z = torch.randn(pool, dim, generator=generator)
        hubs = z[k_occurrence(z, k) > threshold]
        kept.append(hubs)
        have += len(hubs)
        if have >= n:
            return torch.cat(kept)[:n]
    raise ValueError(f"only {have} latents with N_{k} > {threshold} in {max_pools} pools of {pool}; lower the threshold")
