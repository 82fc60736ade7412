"""Rectified flow / velocity matching, the pure pieces: the straight path, its velocity, the loss, the samplers.

生成扩散模型漫谈（十七）：构建ODE的一般步骤（下） / 硬刚扩散ODE and the ReFlow post: with x_0 noise and x_1 data,

    x_t = (1 - t) x_0 + t x_1,        t ∈ [0, 1]
    L(θ) = E_{t, x_0, x_1} || v_θ(x_t, t) - (x_1 - x_0) ||²

is minimised by v_θ = E[x_1 - x_0 | x_t], whose ODE dx/dt = v_θ(x, t) carries noise (t = 0) to data (t = 1).
Any model that maps (x_t, t) to a velocity of x_t's shape fits: a UNet over images
(:mod:`kexue.diffusion`), or a Transformer over image patches inside a text sequence
(:mod:`kexue.multimodal`). Models are called as ``model(x, t)`` with float t of shape (B,).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

VelocityModel = Callable[[Tensor, Tensor], Tensor]


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """t of shape (B,) or x's leading shape -> broadcastable against x."""
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim())))


def flow_interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """The straight path x_t = (1 - t) x_0 + t x_1; ``t`` has x's leading shape (e.g. (B,) or (B, N))."""
    t = _bcast(t, x1).to(x1.dtype)
    return (1 - t) * x0 + t * x1


def flow_target(x0: Tensor, x1: Tensor) -> Tensor:
    """The velocity of the straight path, d x_t / dt = x_1 - x_0 (the regression target)."""
    return x1 - x0


def flow_matching_loss(velocity: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """mean || v - (x_1 - x_0) ||² over every element (the predicted ``velocity`` at x_t)."""
    return (velocity - flow_target(x0, x1)).pow(2).mean()


def flow_loss(model: VelocityModel, x1: Tensor, x0: Tensor | None = None) -> Tensor:
    """Velocity matching with t ~ U(0, 1) per sample; pass ``x0`` to train on fixed (noise, data) pairs
    (the reflow step)."""
    if x0 is None:
        x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0], device=x1.device)
    return flow_matching_loss(model(flow_interpolate(x0, x1, t), t), x0, x1)


@torch.no_grad()
def sample_euler(model: VelocityModel, x: Tensor, steps: int, progress: bool = False) -> Tensor:
    """Euler from t=0 (noise) to t=1 (data); NFE = steps."""
    ts = torch.linspace(0, 1, steps + 1, device=x.device)
    for i in tqdm(range(steps), disable=not progress, desc="euler", leave=False):
        x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(x.shape[0]))
    return x


@torch.no_grad()
def sample_heun(model: VelocityModel, x: Tensor, steps: int, progress: bool = False) -> Tensor:
    """Heun (trapezoidal predictor-corrector), second order; NFE = 2 * steps."""
    ts = torch.linspace(0, 1, steps + 1, device=x.device)
    for i in tqdm(range(steps), disable=not progress, desc="heun", leave=False):
        h = ts[i + 1] - ts[i]
        v0 = model(x, ts[i].expand(x.shape[0]))
        v1 = model(x + h * v0, ts[i + 1].expand(x.shape[0]))
        x = x + h * (v0 + v1) / 2
    return x


__all__ = ["VelocityModel", "flow_interpolate", "flow_loss", "flow_matching_loss", "flow_target", "sample_euler",
           "sample_heun"]
