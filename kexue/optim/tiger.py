r"""Tiger, a Tight-fisted optimizer — 《Tiger：一个“抠”到极致的优化器》 (reference code: github.com/bojone/tiger).

Lion with :math:`\beta_1 = \beta_2 = \beta`, i.e. SignSGD with momentum and decoupled weight decay:

.. math::
    m_t &= \beta\,m_{t-1} + (1-\beta)\,g_t \\
    \theta_t &= \theta_{t-1} - \eta_t\big[\operatorname{sign}(m_t) + \lambda\,\theta_{t-1}\big]

**Learning rate** (LAMB-like, relative to the parameter's scale): :math:`\eta_t = \alpha_t\cdot\mathrm{RMS}(\theta_{t-1})`
for matrices, the RMS of each row for embedding tables, and :math:`\eta_t = \alpha_t/2` with no weight decay
for biases and normalisation gains / shifts. :math:`\alpha_t` is the group's ``lr`` (drive it with any
scheduler, e.g. ``lambda_lr(opt, PiecewiseLinear({0: 0, 40000: 1, 160000: 0.5}))`` for the reference's
piecewise-linear ``lr_schedule``; the scheduler then counts ``step()`` calls, micro-steps included).
Each parameter's *kind* — ``"matrix"``, ``"embedding"``, ``"bias"`` or ``"gain"`` — decides which rule
applies; :func:`tiger_param_groups` reads it off a module (the reference matches variable names).

**Gradient accumulation without a buffer** (《隐藏在动量中的梯度累积：少更新几步，效果反而更好？》): with
``grad_accum_steps=k`` call ``step()`` after *every* micro-batch; the momentum itself accumulates:

.. math::
    m \leftarrow \begin{cases}\beta\,m + \tfrac{1-\beta}{k}\,g & \text{first micro-step of a group}\\
                              m + \tfrac{1-\beta}{k}\,g & \text{otherwise}\end{cases}

and the weights move only on the k-th call, so after k micro-steps
:math:`m = \beta m + (1-\beta)\,\overline{g}` — exactly one Tiger step on the averaged gradient, with
no memory beyond :math:`m` (``.grad`` can be freed after each micro-batch).

**NaN guard**: when a parameter's gradient holds a NaN, its momentum is kept and the parameter shrinks
towards its neutral value instead of updating: :math:`\theta \leftarrow (\theta - c)\,s + c` with
``shrink_ratio`` :math:`s = 0.99` and :math:`c = 1` for gains, 0 otherwise (mixed-precision blow-ups).

Defaults are the reference's: ``beta=0.965``, ``weight_decay=0.01``, ``shrink_ratio=0.99``; ``lr=1.76e-3``
is the relative rate of its README. A matrix initialised to zero has RMS 0 and never moves (as in the
reference): give such a parameter the ``"bias"`` kind.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from kexue.layers.norms import LayerNorm, RMSNorm
from kexue.optim.lion import run_closure

KINDS = ("matrix", "embedding", "bias", "gain")
_NORMS: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, LayerNorm, RMSNorm) + \
    ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def parameter_kind(module: nn.Module, name: str, full_name: str) -> str:
    """The Tiger kind of parameter ``name`` held directly by ``module`` (``full_name``: its dotted path)."""
    if isinstance(module, _NORMS):
        return "gain" if name == "weight" else "bias"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if re.search(r"bias|beta|gamma", full_name):  # biases; a conditional norm's zero-initialised γ/β projections
        return "bias"
    return "matrix"


def tiger_param_groups(model: nn.Module) -> list[dict]:
    """One param group per kind present in ``model`` (trainable parameters only): norms' ``weight`` ->
    ``"gain"``, their other parameters and anything named bias/beta/gamma -> ``"bias"``, ``nn.Embedding``
    tables -> ``"embedding"``, the rest -> ``"matrix"``. A shared (tied) parameter takes its first kind."""
    groups: dict[str, list[nn.Parameter]] = {k: [] for k in KINDS}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            groups[parameter_kind(module, name, f"{mod_name}.{name}" if mod_name else name)].append(p)
    return [{"params": ps, "kind": k} for k, ps in groups.items() if ps]


def _rms(p: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Root mean square of ``p`` (of each row along ``dim``), computed in at least fp32."""
    x = p if p.dtype in (torch.float32, torch.float64) else p.float()
    ms = x.pow(2).mean() if dim is None else x.pow(2).mean(dim=dim, keepdim=True)
    return ms.sqrt().to(p.dtype)


class Tiger(Optimizer):
    """Tiger (see the module doc). ``params``: an ``nn.Module`` (grouped by :func:`tiger_param_groups`),
    or parameters / param groups; every group needs a ``kind`` (in the group or through ``kind=``)."""

    def __init__(self, params: Iterable | nn.Module, lr: float = 1.76e-3, beta: float = 0.965,
                 weight_decay: float = 0.01, grad_accum_steps: int = 1, shrink_ratio: float = 0.99,
                 kind: str | None = None):
        if not lr > 0:
            raise ValueError(f"Tiger: lr must be > 0, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Tiger: beta must lie in [0, 1), got {beta}")
        if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
            raise ValueError(f"Tiger: grad_accum_steps must be a positive integer, got {grad_accum_steps!r}")
        if not 0.0 < shrink_ratio <= 1.0:
            raise ValueError(f"Tiger: shrink_ratio must lie in (0, 1], got {shrink_ratio}")
        if isinstance(params, nn.Module):
            params = tiger_param_groups(params)
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, kind=kind,
                                      grad_accum_steps=grad_accum_steps, shrink_ratio=shrink_ratio))
        for i, g in enumerate(self.param_groups):
            if g["kind"] not in KINDS:
                raise ValueError(f"Tiger: param group {i} has kind {g['kind']!r}; give each group a kind in {KINDS} "
                                 "(pass the model, tiger_param_groups(model), or kind=...)")
        if len({g["grad_accum_steps"] for g in self.param_groups}) > 1:
            raise ValueError("Tiger: grad_accum_steps is global (the micro-step count); give every group the same")

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            k, beta, s = group["grad_accum_steps"], group["beta"], group["shrink_ratio"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                t = state["step"]  # every call counts, so the accumulation phase is the same for all parameters
                state["step"] = t + 1
                if p.grad is None:
                    continue
                self._update(p, p.grad, state["exp_avg"], group, t, k, beta, s)
        return loss

    @staticmethod
    def _update(p, grad, m, group, t: int, k: int, beta: float, s: float) -> None:
        if grad.is_sparse:  # m ← b1·m + b2·scatter(g): the same as on the dense gradient
            grad = grad.coalesce().to_dense()
        kind = group["kind"]
        nan = torch.isnan(grad).any()
        b1 = beta if t % k == 0 else 1.0
        m.copy_(torch.where(nan, m, m.mul(b1).add(grad, alpha=(1.0 - beta) / k)))  # NaN: momentum kept
        c = 1.0 if kind == "gain" else 0.0
        shrunk = (p - c) * s + c
        if (t + 1) % k:  # a micro-step: only the NaN guard may touch the weights
            p.copy_(torch.where(nan, shrunk, p))
            return
        lr, decay = group["lr"], group["weight_decay"]
        if kind in ("bias", "gain"):
            lr, decay = lr * 0.5, 0.0
        elif kind == "embedding":
            lr = lr * _rms(p, dim=-1)
        else:
            lr = lr * _rms(p)
        update = (torch.sign(m) + decay * p) * lr
        p.copy_(torch.where(nan, shrunk, p - update))
