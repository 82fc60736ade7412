"""ODE / rectified flow: x_t = (1-t) x_0 + t x_1 (x_0 noise, x_1 data), train v_θ(x_t, t) ≈ x_1 - x_0.

生成扩散模型漫谈（十七）：构建ODE的一般步骤（下） / 硬刚扩散ODE, and the ReFlow post ("从Wasserstein距离到
ReFlow").  Minimising E||v_θ(x_t, t) - (x_1 - x_0)||² gives v_θ = E[x_1 - x_0 | x_t], whose ODE dx/dt = v_θ
carries noise to data.  ReFlow re-pairs (x_0, ODE(x_0)) and trains again: paths of a deterministic coupling
do not cross, so the new flow is straighter and needs fewer steps.
Models are called as ``model(x, t)`` with float t ∈ [0, 1] of shape (B,).
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

VelocityModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (x.dim() - 1)))


def flow_loss(model: VelocityModel, x1: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
    """Velocity matching; pass ``x0`` to train on fixed (noise, data) pairs (the reflow step)."""
    if x0 is None:
        x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0], device=x1.device)
    xt = (1 - _bcast(t, x1)) * x0 + _bcast(t, x1) * x1
    return (model(xt, t) - (x1 - x0)).pow(2).mean()


@torch.no_grad()
def sample_euler(model: VelocityModel, x: torch.Tensor, steps: int, progress: bool = False) -> torch.Tensor:
    """Euler from t=0 (noise) to t=1 (data); NFE = steps."""
    ts = torch.linspace(0, 1, steps + 1, device=x.device)
    for i in tqdm(range(steps), disable=not progress, desc="euler", leave=False):
        x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(x.shape[0]))
    return x


@torch.no_grad()
def sample_heun(model: VelocityModel, x: torch.Tensor, steps: int, progress: bool = False) -> torch.Tensor:
    """Heun (trapezoidal predictor-corrector), second order; NFE = 2 * steps."""
    ts = torch.linspace(0, 1, steps + 1, device=x.device)
    for i in tqdm(range(steps), disable=not progress, desc="heun", leave=False):
        h = ts[i + 1] - ts[i]
        v0 = model(x, ts[i].expand(x.shape[0]))
        v1 = model(x + h * v0, ts[i + 1].expand(x.shape[0]))
        x = x + h * (v0 + v1) / 2
    return x


@torch.no_grad()
def reflow_pairs(model: VelocityModel, noise: torch.Tensor, steps: int = 50, batch_size: int = 500,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The coupling for ReFlow: (x_0, x_1 = ODE_θ(x_0)), integrated with Heun."""
    outs = [sample_heun(model, z, steps) for z in tqdm(noise.split(batch_size), disable=not progress,
                                                        desc="reflow pairs", leave=False)]
    return noise, torch.cat(outs)
