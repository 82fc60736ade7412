r"""Amos-derived training strategies — "基于Amos优化器思想推导出来的一些炼丹策略".

For an Adam-style update :math:`\theta_{t+1} = \theta_t - (\alpha_t u_t + \rho_t\theta_t)` whose
entries have magnitude :math:`|u|\approx 1`, and a parameter whose entries should stay at scale
:math:`q` (its initialisation scale, e.g. :math:`q = 1/\sqrt{n}` for an :math:`n\times n`
matrix), keeping :math:`\|\theta\|^2 \approx k q^2` stationary needs
:math:`2\rho_t \|\theta\|^2 = \alpha_t^2 \|u\|^2`, i.e.

.. math:: \alpha_0 = \xi\,q,\qquad \rho_t = \frac{\alpha_t^2}{2q^2}

(learning rate proportional to the init scale, weight decay tied to the learning rate), and the
learning rate then decays with the accumulated decay :math:`b_t` exactly as in Amos:

.. math::
    \gamma_t = \frac{\xi^2}{\sqrt{1 + c\sqrt{\xi}\,b_{t-1}}},\quad
    b_t = b_{t-1} + \gamma_t(1+b_{t-1}),\quad
    \alpha_t = \frac{\xi q}{1 + d\sqrt{\xi q}\,b_{t-1}},\quad \rho_t = \tfrac12\gamma_t\,\frac{\alpha_t}{\xi q}

(Amos's rule with :math:`g^2/\hat v \approx 1`; early on :math:`\alpha_t \approx \alpha_0/(1+d\sqrt{\xi q}\,\xi^2 t)`,
later :math:`b_t = O(t^2)`). :class:`AmosSchedule` applies these per parameter group to
any AdamW-like optimizer (``weight_decay`` in torch's convention, i.e. multiplied by ``lr``).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def init_scale(p: torch.Tensor, fallback: float = 0.5) -> float:
    """The expected entry scale q of a parameter: the RMS of its (initial) values; ``fallback``
    for all-zero tensors (biases), whose scale the init does not tell."""
    rms = p.detach().float().pow(2).mean().sqrt().item() if p.numel() else 0.0
    return rms if rms > 0 else fallback


def amos_hparams(q: float, xi: float) -> dict[str, float]:
    """Learning rate and weight decay from the init scale ``q`` and the relative rate ``xi``
    (roughly 1/sqrt(number of independent batches)): ``lr = xi*q``, per-step decay
    ``rho = lr^2/(2 q^2) = xi^2/2``, and ``weight_decay = rho/lr`` in torch.optim.AdamW's convention."""
    lr = xi * q
    rho = lr * lr / (2.0 * q * q)
    return {"lr": lr, "decay": rho, "weight_decay": rho / lr}


def param_groups_by_scale(model: nn.Module, xi: float, fallback: float = 0.5) -> list[dict]:
    """One AdamW param group per parameter with its Amos-derived ``lr`` / ``weight_decay``
    (and its scale recorded as ``q`` for :class:`AmosSchedule`)."""
    groups = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        q = init_scale(p, fallback)
        hp = amos_hparams(q, xi)
        groups.append({"params": [p], "name": name, "q": q, "lr": hp["lr"], "weight_decay": hp["weight_decay"]})
    return groups


class AmosDecay:
    """Deterministic Amos decay: ``factors(t) -> (lr_factor, rho_over_xi2)`` for scale ``q``."""

    def __init__(self, xi: float, c_coef: float = 0.25, d_coef: float = 0.25):
        self.xi, self.c_coef, self.d_coef = float(xi), float(c_coef), float(d_coef)
        self._b = [0.0]  # b_0, b_1, ... cached: the recursion is sequential

    def b(self, t: int) -> float:
        while len(self._b) <= t:
            b = self._b[-1]
            gamma = self.xi ** 2 / math.sqrt(1.0 + self.c_coef * math.sqrt(self.xi) * b)
            self._b.append(b + gamma * (1.0 + b))
        return self._b[t]

    def __call__(self, t: int, q: float) -> tuple[float, float]:
        """(alpha_t / alpha_0, rho_t) for the (t+1)-th update (t = 0, 1, ...)."""
        b = self.b(t)
        lr_factor = 1.0 / (1.0 + self.d_coef * math.sqrt(self.xi * q) * b)
        gamma = self.xi ** 2 / math.sqrt(1.0 + self.c_coef * math.sqrt(self.xi) * b)
        return lr_factor, 0.5 * gamma * lr_factor


class AmosSchedule:
    """Scheduler setting each group's ``lr = xi*q*d_t`` and ``weight_decay = rho_t / lr`` before
    every step (groups need ``q``; see :func:`param_groups_by_scale`). ``step()`` once per update."""

    def __init__(self, optimizer: torch.optim.Optimizer, xi: float, c_coef: float = 0.25, d_coef: float = 0.25):
        self.optimizer = optimizer
        self.decay = AmosDecay(xi, c_coef, d_coef)
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        for g in self.optimizer.param_groups:
            lr_factor, rho = self.decay(self.last_step, g["q"])
            g["lr"] = self.decay.xi * g["q"] * lr_factor
            g["weight_decay"] = rho / g["lr"]

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()
