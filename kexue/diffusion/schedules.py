"""Noise schedules: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,  ᾱ_t = Π_{s≤t} (1 - β_s).

生成扩散模型漫谈（一）：DDPM = 拆楼 + 建楼.  The linear schedule is DDPM's β_t ∈ [1e-4, 0.02] over
T = 1000 steps; the cosine schedule is Nichol & Dhariwal's ᾱ(t) = cos²((t + s)/(1 + s)·π/2).
Everything is computed in float32 exactly like diffusers so the samplers match its schedulers bit for bit
(up to float rounding).
"""
from __future__ import annotations

import math

import torch


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear β schedule (float32)."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule: β_i = min(1 - ᾱ((i+1)/T) / ᾱ(i/T), max_beta); the clip avoids a singular last step."""

    def abar(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(schedule: str = "linear", num_steps: int = 1000) -> torch.Tensor:
    if schedule == "linear":
        return linear_betas(num_steps)
    if schedule == "cosine":
        return cosine_betas(num_steps)
    raise ValueError(f"unknown schedule {schedule!r}; use 'linear' or 'cosine'")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π (1 - β_s), the signal fraction left at step t."""
    return torch.cumprod(1.0 - betas, dim=0)


def spaced_timesteps(num_train: int, num_steps: int, spacing: str = "leading") -> torch.Tensor:
    """A descending sub-sequence of the training steps to sample with (DDIM: any sub-sequence works).

    "leading" = diffusers' default (0, r, 2r, ... reversed, r = T // n); "trailing" ends exactly at T - 1,
    which matters for few steps: leading spacing never starts from pure noise.
    """
    if not 1 <= num_steps <= num_train:
        raise ValueError(f"num_steps must be in [1, {num_train}], got {num_steps}")
    if spacing == "leading":
        ts = torch.arange(num_steps) * (num_train // num_steps)
    elif spacing == "trailing":
        ts = torch.round(torch.arange(num_train, 0, -num_train / num_steps)).long().flip(0) - 1
    elif spacing == "linspace":
        ts = torch.linspace(0, num_train - 1, num_steps, dtype=torch.float64).round().long()
    else:
        raise ValueError(f"unknown spacing {spacing!r}")
    return ts.flip(0).long()


def q_sample(x0: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process (拆楼): x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε for a batch of integer steps t."""
    a = abar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
