r"""Amos: Adam-style update with adaptive weight decay towards a model-oriented scale
(Tian & Parikh 2022; "基于Amos优化器思想推导出来的一些炼丹策略").

Per parameter with expected entry scale :math:`\eta` (``eta``) and global rate :math:`\xi` (``lr``):

.. math::
    v_t &= \beta v_{t-1} + (1-\beta)\,\overline{g_t^2},\qquad
    \hat r_t = (1-\beta^t) / \max(v_t, \epsilon) \\
    \gamma_t &= \frac{\xi^2\,\hat r_t\,\overline{g_t^2}}{\sqrt{1 + c\sqrt{\xi}\,b_{t-1}}},\qquad
    d_t = \frac{1}{1 + d\sqrt{\xi\eta}\,b_{t-1}} \\
    \theta_t &= \theta_{t-1} - d_t\Big(\xi\eta\sqrt{\hat r_t}\,g_t + (\tfrac12\gamma_t + \lambda)\,\theta_{t-1}\Big),\qquad
    b_t = b_{t-1} + \gamma_t (1 + b_{t-1})

:math:`\overline{g^2}` is the mean of :math:`g^2` over the *reduced* axes: giving ``reduce_dims``
keeps ``v`` and ``b`` at a reduced shape (one scalar per row / per tensor), the memory-saving
variant. The learning rate ``xi * eta`` is tied to the parameter's scale, the weight decay
``gamma/2`` is ``lr^2 / (2 eta^2)``, and both decay through the accumulated ``b`` — the post's
three "strategies" in one optimizer (see :mod:`kexue.optim.strategies` for them as helpers).
Follows the published rule of ``jestimator.amos`` (optional element-wise clipping before and
momentum EMA, ``debias=False``, after the Amos transform).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch.optim import Optimizer

from kexue.optim.lion import run_closure


def default_eta(p: torch.Tensor) -> float:
    """Expected entry scale from the parameter's own current (i.e. initial) RMS; 0.5 for
    zero-initialised tensors (biases, LayerNorm shifts) — jestimator's usual choice."""
    rms = p.detach().float().pow(2).mean().sqrt().item() if p.numel() else 0.0
    return rms if rms > 0 else 0.5


class Amos(Optimizer):
    """Amos. ``eta`` is a float or ``callable(param) -> float`` per group (None: the init RMS,
    read when the parameter is first stepped and then kept in the state);
    ``reduce_dims`` is None (full ``v``), ``"all"`` (one scalar per tensor) or a tuple of axes
    averaged over (e.g. ``(-1,)`` keeps one ``v`` per output row)."""

    def __init__(self, params: Iterable, lr: float = 0.01,
                 eta: float | Callable[[torch.Tensor], float] | None = None, beta: float = 0.999,
                 momentum: float | None = None, clip_value: float | None = None, extra_l2: float = 0.0,
                 d_coef: float = 0.25, c_coef: float = 0.25, epsilon: float = 2.0 ** -125,
                 reduce_dims: tuple[int, ...] | str | None = None):
        if lr <= 0:
            raise ValueError(f"Amos: lr must be > 0, got {lr}")
        defaults = dict(lr=lr, eta=eta, beta=beta, momentum=momentum, clip_value=clip_value,
                        extra_l2=extra_l2, d_coef=d_coef, c_coef=c_coef, epsilon=epsilon,
                        reduce_dims=reduce_dims)
        super().__init__(params, defaults)

    @staticmethod
    def _reduced(p: torch.Tensor, reduce_dims) -> tuple[int, ...]:
        if reduce_dims is None or p.dim() == 0:
            return ()
        if reduce_dims == "all":
            return tuple(range(p.dim()))
        return tuple(sorted({d % p.dim() for d in reduce_dims}))

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        dims = self._reduced(p, group["reduce_dims"])
        shape = [1 if i in dims else s for i, s in enumerate(p.shape)]
        eta = group["eta"] if group["eta"] is not None else default_eta
        eta = eta(p) if callable(eta) else float(eta)
        state = dict(step=0, eta=float(eta), v=p.new_zeros(shape), b=p.new_zeros(shape))
        if group["momentum"]:
            state["m"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            xi, beta = group["lr"], group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self._init_state(p, group))
                g = p.grad
                if group["clip_value"]:
                    g = g.clamp(-group["clip_value"], group["clip_value"])
                state["step"] += 1
                dims = self._reduced(p, group["reduce_dims"])
                g2 = g.square().mean(dim=dims, keepdim=True) if dims else g.square()
                v, b = state["v"], state["b"]
                v.mul_(beta).add_(g2, alpha=1.0 - beta)
                rcpl_v_hat = (1.0 - beta ** state["step"]) / v.clamp(min=group["epsilon"])
                gamma = (1.0 + group["c_coef"] * math.sqrt(xi) * b).rsqrt() * (xi * xi) * rcpl_v_hat * g2
                init_lr = xi * state["eta"]
                decay_d = (1.0 + group["d_coef"] * math.sqrt(init_lr) * b).reciprocal()
                update = decay_d * ((-0.5 * gamma - group["extra_l2"]) * p - init_lr * rcpl_v_hat.sqrt() * g)
                b.add_(gamma * (1.0 + b))
                if group["momentum"]:
                    update = state["m"].lerp_(update, 1.0 - group["momentum"])
                p.add_(update)
        return loss
