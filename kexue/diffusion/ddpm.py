"""DDPM: train ε_θ with ||ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, t)||², sample ancestrally.

生成扩散模型漫谈（一）：DDPM = 拆楼 + 建楼.  One reverse ("建楼") step from t to its predecessor s:
    x̂_0 = (x_t - sqrt(1-ᾱ_t) ε_θ) / sqrt(ᾱ_t)
    x_s = sqrt(ᾱ_s) β'_t / (1-ᾱ_t) · x̂_0 + sqrt(α'_t) (1-ᾱ_s) / (1-ᾱ_t) · x_t + σ_t z,
    α'_t = ᾱ_t / ᾱ_s,  β'_t = 1 - α'_t,  σ_t² = (1-ᾱ_s)/(1-ᾱ_t) β'_t     ("fixed_small" variance)
For s = t - 1 this is the paper's step; for a spaced sub-sequence it is the same posterior q(x_s | x_t, x_0)
(diffusers' DDPMScheduler does the same).  Models are called as ``model(x, t)`` with integer t.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from kexue.diffusion.schedules import q_sample

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddpm_loss(model: EpsModel, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """ε-prediction loss at a uniformly drawn step t ∈ {0, ..., T-1}."""
    t = torch.randint(0, len(abar), (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    return (model(q_sample(x0, t, abar, noise), t) - noise).pow(2).mean()


def _abar_at(abar: torch.Tensor, t: int) -> torch.Tensor:
    # ᾱ_{-1} := 1: the final step lands on clean data.
    return abar[t] if t >= 0 else torch.ones((), dtype=abar.dtype)


def ddpm_step(eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, abar: torch.Tensor,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral step x_t -> x_{prev_t}; ``noise`` is the z of the formula (drawn if None, unused at t=0)."""
    a_t, a_s = _abar_at(abar, t), _abar_at(abar, prev_t)
    alpha_t = a_t / a_s
    beta_t = 1 - alpha_t
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    mean = (a_s ** 0.5 * beta_t) / (1 - a_t) * x0 + alpha_t ** 0.5 * (1 - a_s) / (1 - a_t) * x
    if t == 0:
        return mean
    var = torch.clamp((1 - a_s) / (1 - a_t) * beta_t, min=1e-20)
    if noise is None:
        noise = torch.randn_like(x)
    return mean + var ** 0.5 * noise


def run_steps(model: EpsModel, x: torch.Tensor, timesteps: torch.Tensor, step, stochastic: bool,
              generator: torch.Generator | None = None, progress: bool = False, desc: str = "") -> torch.Tensor:
    """Drive ``step(eps, t, prev_t, x, noise)`` along descending ``timesteps`` (the DDPM/DDIM outer loop)."""
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(tqdm(ts, disable=not progress, desc=desc, leave=False)):
        prev_t = ts[i + 1] if i + 1 < len(ts) else -1
        eps = model(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if stochastic else None
        x = step(eps, t, prev_t, x, noise)
    return x


@torch.no_grad()
def sample_ddpm(model: EpsModel, x: torch.Tensor, abar: torch.Tensor, timesteps: torch.Tensor,
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling from noise x along descending ``timesteps`` (NFE = len(timesteps))."""
    step = lambda eps, t, s, x, z: ddpm_step(eps, t, s, x, abar, z if t > 0 else None)  # noqa: E731
    return run_steps(model, x, timesteps, step, True, generator, progress, "ddpm")
