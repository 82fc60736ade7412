"""PFGM: data as charges on the z = 0 plane of an (N+1)-dim space; follow the Poisson field back to them.

生成扩散模型漫谈（十三）：从万有引力到扩散模型 (Poisson Flow Generative Models, Xu et al. 2022).
The field of the augmented data ỹ = (y, 0) at x̃ = (x, z) is
    E(x̃) ∝ Σ_y (x̃ - ỹ) / ||x̃ - ỹ||^{N+1},
whose lines start at the data and, far away, become radial, so a large hemisphere maps to the data.
Training (paper Alg. 2): perturb data to x̃ with ||x - y|| and z growing as (1+τ)^m, regress the normalised
empirical field -E/(||E|| + γ)·sqrt(N) (pointing *towards* the data) computed against a large reference
batch.  Sampling: draw x̃ on the hemisphere z = z_max with the paper's radius law, integrate the backward
ODE dx/dz = E_x / E_z in t = log z down to z_min and keep x.
Networks are called as ``model(x, z)`` and return the (N+1)-dim field flattened as (B, N+1).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm


def empirical_field(x_aug: torch.Tensor, ref_aug: torch.Tensor, gamma: float = 0.0) -> torch.Tensor:
    """-E(x̃) of the reference charges, normalised as in the paper: direction / (||·|| + γ) · sqrt(N).

    x_aug: (B, N+1), ref_aug: (R, N+1) (data with z = 0).  Weights ∝ ||x̃ - ỹ||^{-(N+1)} are computed as a
    softmax of -(N+1)·log distance, the stable form of the paper's "divide by the minimum distance" trick.
    """
    n = x_aug.shape[1] - 1
    diff = ref_aug.unsqueeze(0) - x_aug.unsqueeze(1)                      # (B, R, N+1), towards data
    dist = diff.norm(dim=-1).clamp_min(1e-12)
    w = torch.softmax(-(n + 1) * dist.log(), dim=1)
    field = (w.unsqueeze(-1) * diff).sum(1)
    return field / (field.norm(dim=-1, keepdim=True) + gamma) * math.sqrt(n)


def perturb(x: torch.Tensor, m: torch.Tensor, sigma_end: float = 0.01, tau: float = 0.03,
            restrict_m: float | None = None) -> torch.Tensor:
    """Paper Alg. 2: x̃ = (x + ||ε_x||·(1+τ)^m·u, |ε_z|·(1+τ)^m), ε ~ N(0, σ_end²), u uniform on the sphere.

    ``restrict_m`` (the reference code's ``training.restrict_M``, on in all its configs): a sample whose
    |ε_z| < 0.005 draws its m again from U[0, restrict_m) (0.7·M there), which keeps perturbations
    that start very close to the data plane from being blown up to huge norms (paper App. B.1.1).
    """
    b = x.shape[0]
    flat = x.reshape(b, -1)
    z0 = torch.randn(b, device=x.device).abs() * sigma_end
    if restrict_m is not None:
        low = z0 < 0.005
        m = torch.where(low, torch.rand(b, device=x.device) * restrict_m, m)
    mult = (1 + tau) ** m
    z = z0 * mult
    radius = (torch.randn_like(flat) * sigma_end).norm(dim=1) * mult
    u = torch.randn_like(flat)
    u = u / u.norm(dim=1, keepdim=True)
    return torch.cat([flat + u * radius[:, None], z[:, None]], dim=1)


def pfgm_loss(model, x: torch.Tensor, ref: torch.Tensor, M: int = 280, sigma_end: float = 0.01,
              tau: float = 0.03, gamma: float = 5.0, z_min: float = 1e-3, restrict: bool = True) -> torch.Tensor:
    """Regress the network onto the normalised empirical field of ``ref`` (a large batch of real data).
    ``restrict``: the reference's ``restrict_M`` (m of near-plane samples redrawn below 0.7·M)."""
    m = torch.rand(x.shape[0], device=x.device) * M
    x_aug = perturb(x, m, sigma_end, tau, restrict_m=0.7 * M if restrict else None)
    ref_aug = torch.cat([ref.reshape(ref.shape[0], -1), ref.new_zeros(ref.shape[0], 1)], dim=1)
    with torch.no_grad():
        target = empirical_field(x_aug, ref_aug, gamma)
    pred = model(x_aug[:, :-1].view_as(x), x_aug[:, -1].clamp_min(z_min))
    return (pred - target).pow(2).mean()


def prior_radius(b: torch.Tensor, z_max: float, upper_norm: float) -> torch.Tensor:
    """R = sqrt(z_max² · B / (1 - B)) clipped to [1, upper_norm], for B ~ Beta(N/2, 1/2) (paper App. A.4)."""
    b = b.double().clamp(max=1 - 1e-12)
    return (z_max ** 2 * b / (1 - b)).sqrt().clamp(1.0, upper_norm)


def prior(n: int, dim: int, z_max: float = 20.0, upper_norm: float | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples x on the hemisphere z = z_max: radius R with R²/z_max² = B/(1-B), B ~ Beta((N+1)/2 - 1/2, 1/2)
    (the reference code's ``a = N/2 - 0.5`` with its N = data dim + 1), direction uniform.
    ``upper_norm`` defaults to 3·z_max·sqrt(N) (the reference fixes 3000 for CIFAR-10's N = 3072, z_max = 40)."""
    upper_norm = upper_norm if upper_norm is not None else 3 * z_max * math.sqrt(dim)
    beta = torch.distributions.Beta(torch.tensor(dim / 2.0), torch.tensor(0.5))
    radius = prior_radius(beta.sample((n,)), z_max, upper_norm).float()
    u = torch.randn(n, dim, generator=generator)
    return u / u.norm(dim=1, keepdim=True) * radius[:, None]


@torch.no_grad()
def sample_pfgm(model, x: torch.Tensor, steps: int, z_max: float = 20.0, z_min: float = 1e-3,
                z_exp: float = 1.0, gamma: float = 5.0, progress: bool = False) -> torch.Tensor:
    """Euler on the backward ODE in t = log z:  dx/dt = z · E_x / E_z  (NFE = steps).

    ``x`` is a prior sample (B, ...) at z = z_max (see ``prior``).  Below z = z_exp the predicted E_z (tiny and
    relatively noisy there) is replaced by the value implied by ||E_x|| and z (see below), as in
    the paper's Appendix B.2.3 and its code (only when γ > 0); pass z_exp = 0 to always use the network's E_z.
    dz is divided by E_z + 1e-5 as in the reference's ``Poisson.ode``; a non-negative denominator (a
    mispredicted sign) is clamped to -1e-5 instead of flipping the direction of travel.
    """
    b = x.shape[0]
    sqrt_n = math.sqrt(x[0].numel())
    ts = torch.linspace(math.log(z_max), math.log(z_min), steps + 1)
    for i in tqdm(range(steps), disable=not progress, desc="pfgm", leave=False):
        z = math.exp(float(ts[i]))
        v = model(x, torch.full((b,), z, device=x.device))
        # -E points to the data so v_z < 0
        vz = v[:, -1]
        if z < z_exp and gamma > 0:
            # ||E_x||/sqrt(N) = r/(r+γ) with r the distance to the data: invert it, then E_z = -sqrt(N)·z/(r+γ).
            ratio = (v[:, :-1].norm(dim=1) / sqrt_n).clamp(max=1 - 1e-4)
            r = torch.sqrt((gamma * ratio / (1 - ratio)) ** 2 + z ** 2)
            vz = -sqrt_n * z / (r + gamma)
        denom = (vz + 1e-5).clamp(max=-1e-5)
        dx_dz = v[:, :-1] / denom[:, None]
        x = x + float(ts[i + 1] - ts[i]) * z * dx_dz.view_as(x)
    return x


class PoissonFieldNet(nn.Module):
    """Wraps an image net with C+1 output channels: channels 0..C-1 are E_x, the mean of channel C is E_z."""

    def __init__(self, net: nn.Module, z_max: float = 20.0, z_min: float = 1e-3):
        super().__init__()
        self.net, self.log_min, self.log_max = net, math.log(z_min), math.log(z_max)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Condition on log z rescaled to ~[0, 1]: the field changes on a log scale of z.
        t = (z.log() - self.log_min) / (self.log_max - self.log_min)
        out = self.net(x, t)
        c = x.shape[1]
        return torch.cat([out[:, :c].reshape(x.shape[0], -1), out[:, c:].mean(dim=(1, 2, 3))[:, None]], dim=1)
