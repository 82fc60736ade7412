"""DDIM: the same ε_θ as DDPM, sampled along any sub-sequence of steps, deterministic for η = 0.

生成扩散模型漫谈（四）：DDIM = 高观点DDPM.  Training only fixes the marginals p(x_t | x_0), so any
p(x_s | x_t, x_0) with those marginals is allowed; the family
    x_s = sqrt(ᾱ_s) x̂_0 + sqrt(1 - ᾱ_s - σ²) ε_θ + σ z,
    σ = η · sqrt((1-ᾱ_s)/(1-ᾱ_t)) · sqrt(1 - ᾱ_t/ᾱ_s)
has η = 1 ≈ DDPM and η = 0 a deterministic map (an ODE discretisation), which is why few steps work.
"""
from __future__ import annotations

import torch
from kexue.diffusion.ddpm import EpsModel, _abar_at, run_steps


def ddim_step(eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, abar: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step x_t -> x_{prev_t} (prev_t = -1 means ᾱ = 1, i.e. the clean sample)."""
    a_t, a_s = _abar_at(abar, t), _abar_at(abar, prev_t)
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    var = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    std = eta * var ** 0.5
    x_prev = a_s ** 0.5 * x0 + (1 - a_s - std ** 2) ** 0.5 * eps
    if eta > 0:
        if noise is None:
            noise = torch.randn_like(x)
        x_prev = x_prev + std * noise
    return x_prev


@torch.no_grad()
def sample_ddim(model: EpsModel, x: torch.Tensor, abar: torch.Tensor, timesteps: torch.Tensor, eta: float = 0.0,
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """DDIM sampling along descending ``timesteps`` (NFE = len(timesteps))."""
    step = lambda eps, t, s, x, z: ddim_step(eps, t, s, x, abar, eta, z)  # noqa: E731
    return run_steps(model, x, timesteps, step, eta > 0, generator, progress, "ddim")
