"""Invertible residual networks (《细水长flow之可逆ResNet：极致的暴力美学》; Behrmann et al. 2019).

A block y = x + g(x) is invertible when Lip(g) < 1: spectral normalisation scales every weight
so that ||W||₂ <= c < 1 and the activations are 1-Lipschitz. Then

* inverse by the fixed point  x_{n+1} = y - g(x_n)  (a contraction, error shrinks like c^n);
* log|det(I + J_g)| = Σ_{k>=1} (-1)^{k+1} tr(J_g^k) / k  (converges because ||J_g|| < 1),
  with tr(A) ≈ vᵀ A v for v ~ N(0, I) (Hutchinson) so J_g^k v costs k vector-Jacobian products;
* log p(x) = log N(f(x); 0, I) + Σ_blocks log|det(I + J_g)|.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class _ScaledSpectralNorm(nn.Module):
    """W -> W · min(1, c / σ(W)) with σ from spectral_norm's power iteration (soft, as in i-ResNet)."""

    def __init__(self, coeff: float):
        super().__init__()
        self.coeff = coeff

    def forward(self, w: Tensor) -> Tensor:
        return w * self.coeff  # applied after spectral_norm's W / σ(W): ||W||₂ = c


class LipschitzMLP(nn.Module):
    """g(x) = W_L φ(... φ(W_1 x)) with ||W_i||₂ = c and φ = ELU (1-Lipschitz), so Lip(g) <= c^L."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2, coeff: float = 0.9, power_iters: int = 5):
        super().__init__()
        sizes = [dim] + [hidden] * (layers - 1) + [dim]
        self.linears = nn.ModuleList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            lin = spectral_norm(nn.Linear(a, b), n_power_iterations=power_iters)
            torch.nn.utils.parametrize.register_parametrization(lin, "weight", _ScaledSpectralNorm(coeff))
            self.linears.append(lin)

    def forward(self, x: Tensor) -> Tensor:
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < len(self.linears) - 1:
                x = F.elu(x)
        return x


class InvertibleBlock(nn.Module):
    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, x: Tensor) -> Tensor:
        return x + self.g(x)

    @torch.no_grad()
    def inverse(self, y: Tensor, iters: int = 100, tol: float = 1e-7) -> Tensor:
        x = y.clone()
        for _ in range(iters):
            nxt = y - self.g(x)
            if (nxt - x).abs().max() < tol:
                return nxt
            x = nxt
        return x

    def logdet(self, x: Tensor, terms: int = 10, samples: int = 1, exact: bool = False) -> tuple[Tensor, Tensor]:
        """(y, log|det(I + J_g(x))|) per example: truncated power series, Hutchinson or exact traces."""
        if exact:
            x = x.requires_grad_(True) if not x.requires_grad else x
            return x + self.g(x), _exact_series(self.g, x, terms)
        b = x.shape[0]
        xs = x.repeat(samples, *([1] * (x.dim() - 1)))  # all probe vectors in one batch
        if not xs.requires_grad:
            xs.requires_grad_(True)
        gx = self.g(xs)
        v = torch.randn_like(xs)
        w, total = v, torch.zeros(xs.shape[0], dtype=x.dtype, device=x.device)
        for k in range(1, terms + 1):
            (w,) = torch.autograd.grad(gx, xs, w, create_graph=self.training, retain_graph=True)
            total = total + (-1) ** (k + 1) * (w * v).flatten(1).sum(1) / k  # vᵀ J^k v / k
        return xs[:b] + gx[:b], total.view(samples, b).mean(0)


def _exact_series(g: nn.Module, x: Tensor, terms: int) -> Tensor:
    """Σ (-1)^{k+1} tr(J^k)/k with the full per-example Jacobian (small dimensions only)."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda z: g(z[None])[0], row, create_graph=False)
        power, acc = torch.eye(row.numel(), dtype=x.dtype), torch.zeros((), dtype=x.dtype)
        for k in range(1, terms + 1):
            power = power @ jac
            acc = acc + (-1) ** (k + 1) * torch.trace(power) / k
        out.append(acc)
    return torch.stack(out)


class InvertibleResNet(nn.Module):
    """A stack of invertible blocks with a standard normal base density."""

    def __init__(self, dim: int, blocks: int = 4, hidden: int = 64, coeff: float = 0.9):
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(InvertibleBlock(LipschitzMLP(dim, hidden, coeff=coeff)) for _ in range(blocks))

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def inverse(self, z: Tensor, iters: int = 100) -> Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z, iters)
        return z

    def log_prob(self, x: Tensor, terms: int = 10, samples: int = 1, exact: bool = False) -> Tensor:
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for b in self.blocks:
            x, ld = b.logdet(x, terms, samples, exact)
            logdet = logdet + ld
        base = -0.5 * (x.pow(2).sum(1) + self.dim * math.log(2 * math.pi))
        return base + logdet

    @torch.no_grad()
    def sample(self, n: int, iters: int = 100) -> Tensor:
        return self.inverse(torch.randn(n, self.dim), iters)
