r"""Lion: EvoLved Sign Momentum — "Google新搜出的优化器Lion:效率与效果兼得的“训练狮”".

.. math::
    u_t &= \operatorname{sign}\big(\beta_1 m_{t-1} + (1-\beta_1) g_t\big) \\
    \theta_t &= \theta_{t-1} - \eta_t\,(u_t + \lambda\,\theta_{t-1}) \\
    m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

The update is a sign, so every coordinate moves by exactly ``lr``: Lion's learning rate
should be 3–10x smaller than AdamW's (and its weight decay 3–10x larger, keeping
``lr * weight_decay`` fixed). Only one state tensor per parameter (half of Adam's memory).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import Optimizer


def run_closure(closure) -> torch.Tensor | None:
    """The ``closure`` protocol of ``Optimizer.step``: re-evaluate the loss with grad enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Lion(Optimizer):
    """Lion with decoupled weight decay (``theta *= 1 - lr * weight_decay``) and two betas:
    ``beta1`` interpolates the update direction, ``beta2`` tracks the momentum."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"Lion: lr must be > 0, got {lr}")
        if not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"Lion: betas must lie in [0, 1], got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if wd:
                    p.mul_(1.0 - lr * wd)  # decoupled: decay does not enter the sign
                update = torch.lerp(p.grad, m, beta1).sign_()  # beta1*m + (1-beta1)*g
                p.add_(update, alpha=-lr)
                m.lerp_(p.grad, 1.0 - beta2)
        return loss
