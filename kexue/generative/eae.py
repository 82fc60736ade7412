"""Entropic autoencoder (《EAE：自编码器 + BN + 最大熵 = 生成模型》; Ghose et al. 2020).

z = BN(E(x)) has zero mean and unit variance per dimension; among such distributions the
Gaussian has the largest entropy, so maximising H(z) while reconstructing turns the autoencoder
into a generative model whose prior is N(0, I):

    L = E‖x − D(z)‖² − λ Ĥ(z)

Ĥ is the Kozachenko–Leonenko k-nearest-neighbour estimator (the post's “k邻近方法”):

    Ĥ = ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log ε_i,   V_d = π^{d/2} / Γ(d/2 + 1)

with ε_i the distance from z_i to its k-th nearest neighbour in the batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def knn_entropy(z: Tensor, k: int = 1) -> Tensor:
    """Kozachenko–Leonenko differential entropy estimate (nats) of the rows of ``z [N, d]``."""
    n, d = z.shape
    if n <= k:
        raise ValueError(f"need more than k={k} samples, got {n}")
    dist = torch.cdist(z, z)
    dist = dist + torch.diag(torch.full((n,), float("inf"), dtype=z.dtype, device=z.device))
    eps = dist.kthvalue(k, dim=1).values.clamp(min=1e-12)
    log_vd = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1)
    return torch.special.digamma(torch.tensor(float(n))) - torch.special.digamma(torch.tensor(float(k))) \
        + log_vd + d * eps.log().mean()


class EAE(nn.Module):
    """encoder -> BatchNorm (no affine) -> decoder; ``loss`` is reconstruction − λ·entropy."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, entropy_weight: float = 1.0,
                 k: int = 1):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bn = nn.BatchNorm1d(latent_dim, affine=False)
        self.latent_dim, self.entropy_weight, self.k = latent_dim, entropy_weight, k

    def encode(self, x: Tensor) -> Tensor:
        return self.bn(self.encoder(x))

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        z = self.encode(x)
        recon = (self.decoder(z) - x).pow(2).flatten(1).sum(1).mean()
        ent = knn_entropy(z, self.k)
        return recon - self.entropy_weight * ent, {"recon": recon.item(), "entropy": ent.item()}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.decoder(torch.randn(n, self.latent_dim, device=next(self.parameters()).device))
