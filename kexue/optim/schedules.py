r"""Learning-rate multipliers for ``torch.optim.lr_scheduler.LambdaLR``.

* :class:`WarmupLinear`: :math:`f(t) = t/w` for :math:`t<w`, then linear to ``end`` at ``total``.
* :class:`WarmupCosine`: warmup, then :math:`m + (1-m)\tfrac12(1+\cos\pi\,\tfrac{t-w}{T-w})`.
* :class:`PiecewiseLinear`: bert4keras's ``piecewise_linear`` — ``{step: factor}`` knots joined by
  straight lines, the first knot's value before it and the last knot's value after it
  (bert4keras "优化器扩展": ``extend_with_piecewise_linear_lr``).

They are small callable classes (not closures) so that ``LambdaLR.state_dict()`` records their
settings and they pickle across processes.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def _after_warmup(step: int, warmup: int, total: int) -> float | None:
    """None during warmup, else the fraction of the post-warmup span done (clipped to 1)."""
    if step < warmup:
        return None
    return min(1.0, (step - warmup) / max(1, total - warmup))


class WarmupLinear:
    def __init__(self, warmup: int, total: int, end: float = 0.0):
        self.warmup, self.total, self.end = int(warmup), int(total), float(end)

    def __call__(self, step: int) -> float:
        frac = _after_warmup(step, self.warmup, self.total)
        return step / max(1, self.warmup) if frac is None else 1.0 + (self.end - 1.0) * frac


class WarmupCosine:
    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        frac = _after_warmup(step, self.warmup, self.total)
        if frac is None:
            return step / max(1, self.warmup)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


class PiecewiseLinear:
    def __init__(self, knots: dict[int, float]):
        if not knots:
            raise ValueError("PiecewiseLinear needs at least one knot")
        self.knots = sorted((int(k), float(v)) for k, v in dict(knots).items())

    def __call__(self, step: int) -> float:
        (s0, v0) = self.knots[0]
        if step <= s0:
            return v0
        for s1, v1 in self.knots[1:]:
            if step <= s1:
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
            s0, v0 = s1, v1
        return v0


def lambda_lr(optimizer: torch.optim.Optimizer, fn) -> LambdaLR:
    """``LambdaLR(optimizer, fn)``: the scheduler :func:`kexue.train.fit` steps once per update."""
    return LambdaLR(optimizer, fn)
