"""Shortcut models: a flow conditioned on the step size d, trained so one 2d-step = two d-steps.

生成扩散模型漫谈：将步长作为条件输入 (One Step Diffusion via Shortcut Models, Frans et al. 2024).
s_θ(x_t, t, d) is the average velocity over [t, t+d]; it is pinned by
    d → 0:  s_θ(x_t, t, 0) ≈ x_1 - x_0                                       (flow matching)
    s_θ(x_t, t, 2d) ≈ sg[(s_θ(x_t, t, d) + s_θ(x_t + d·s_θ(x_t, t, d), t + d, d)) / 2]   (self-consistency)
and sampling with n steps simply uses d = 1/n, so one step is meaningful without distillation.
"d → 0" is the smallest step 1/M (as in the paper's code). Models are called as ``model(x, t, d)``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from kexue.diffusion.flow import _bcast

ShortcutModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def shortcut_target(model: ShortcutModel, xt: torch.Tensor, t: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Self-consistency target for step 2d: the mean velocity of two explicit half steps of size d."""
    s1 = model(xt, t, d)
    x_mid = xt + _bcast(d, xt) * s1
    s2 = model(x_mid, t + d, d)
    return (s1 + s2) / 2


def shortcut_loss(model: ShortcutModel, x1: torch.Tensor, max_steps: int = 128,
                  consistency_fraction: float = 0.25) -> torch.Tensor:
    """Flow matching at d = 1/M on most of the batch, self-consistency at d ∈ {2/M, ..., 1} on the rest."""
    b = x1.shape[0]
    k = max(1, int(b * consistency_fraction))
    levels = int(math.log2(max_steps))
    x0 = torch.randn_like(x1)
    # Self-consistency part: a full step 2d with d = 2^-j, j ∈ {1..levels}; t on the 2d grid so t+2d ≤ 1.
    j = torch.randint(1, levels + 1, (k,), device=x1.device)
    d = 2.0 ** (-j.float())
    t_sc = torch.floor(torch.rand(k, device=x1.device) / (2 * d)) * (2 * d)
    # Flow-matching part at the smallest step.
    t_fm = torch.rand(b - k, device=x1.device)
    t = torch.cat([t_sc, t_fm])
    xt = (1 - _bcast(t, x1)) * x0 + _bcast(t, x1) * x1
    target_sc = shortcut_target(model, xt[:k], t_sc, d)
    target = torch.cat([target_sc, (x1 - x0)[k:]])
    d_in = torch.cat([2 * d, torch.full((b - k,), 1.0 / max_steps, device=x1.device)])
    return (model(xt, t, d_in) - target).pow(2).mean()


@torch.no_grad()
def sample_shortcut(model: ShortcutModel, x: torch.Tensor, steps: int, progress: bool = False) -> torch.Tensor:
    """n Euler steps of size d = 1/n with the step size fed to the model; NFE = steps."""
    d = torch.full((x.shape[0],), 1.0 / steps, device=x.device)
    for i in tqdm(range(steps), disable=not progress, desc="shortcut", leave=False):
        t = torch.full((x.shape[0],), i / steps, device=x.device)
        x = x + d.view(-1, *([1] * (x.dim() - 1))) * model(x, t, d)
    return x
