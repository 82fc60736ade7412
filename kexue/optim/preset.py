r"""The one optimizer preset of kexue's trainers: AdamW, a warm-up, gradient clipping.

Every front door that trains (the task recipes' ``fit``, the pair/CoSENT trainer, SimBERT, diffusion,
``kexue pretrain``, ``kexue zh-mini``) builds its optimizer, schedule and clip norm here, so the three
are chosen once and recorded the same way (what bert4keras's ``optimizers.py`` composes from
``extend_with_weight_decay`` and ``extend_with_piecewise_linear_lr``; decoupled decay as in Loshchilov &
Hutter's AdamW):

    AdamW(lr, weight_decay)  (decoupled decay, θ ← θ − lr_t·wd·θ, torch's convention)
    lr_t = lr · f(t),  t = 0, 1, …  the update index (``LambdaLR`` steps once per update)
    schedule="linear":   f(t) = t / w  for t < w,  then 1 − (t − w) / (T − w), 0 from T on     (WarmupLinear)
    schedule="constant": f(t) = min(1, (t + 1) / w)                                            (PiecewiseLinear)
    schedule="decay":    as "constant" up to t = w − 1, then linear to ``final`` at t = T, ``final`` after
    global gradient norm clipped at ``clip_norm`` before each update (None: no clipping)

``linear`` serves runs that know their length ``T`` (recipes, pair training, pretraining); its first update
has lr 0. ``constant`` serves runs cut by a wall-clock budget, which may end anywhere, so they do not
decay (the CoSENT demo, SimBERT, diffusion); ``w = 0`` or ``1`` means no warm-up there. A float ``warmup``
in (0, 1] is a fraction of ``total_steps``: ``max(1, ⌊fraction·T⌋)`` updates (0.1 → ``max(1, T // 10)``).

:func:`adamw_preset` returns a :class:`Preset`: the optimizer, the scheduler, the clip norm and
``settings``, the JSON record of the choices; ``preset.fit_options(settings)`` gives the keyword
arguments of :func:`kexue.train.fit`, with that record under ``"optimizer_preset"`` in the run's
``settings.json``.
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Any, Iterable, NamedTuple

import torch
from torch.optim.lr_scheduler import LambdaLR

from kexue.optim.param_groups import describe_groups
from kexue.optim.schedules import PiecewiseLinear, WarmupLinear, lambda_lr

SCHEDULES = ("linear", "constant", "decay")


class Preset(NamedTuple):
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    clip_norm: float | None
    settings: dict[str, Any]  # JSON record: optimizer class, lr, weight_decay, warmup (updates), schedule, ...

    def fit_options(self, settings: dict | None = None) -> dict[str, Any]:
        """``optimizer``, ``scheduler``, ``clip_norm`` and ``settings`` (the caller's ``settings`` plus this
        preset's record under ``"optimizer_preset"``) for :func:`kexue.train.fit`."""
        return {"optimizer": self.optimizer, "scheduler": self.scheduler, "clip_norm": self.clip_norm,
                "settings": {"optimizer_preset": self.settings, **(settings or {})}}


def warmup_steps(warmup: int | float, total_steps: int) -> int:
    """Warm-up length in updates: an int as given, a float fraction ``max(1, ⌊fraction·total_steps⌋)``
    (computed exactly: 0.1 gives ``max(1, total_steps // 10)``)."""
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Real):
        raise ValueError(f"warmup must be a number of updates or a fraction of them, got {warmup!r}")
    if isinstance(warmup, numbers.Integral):
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 updates, got {warmup}")
        return int(warmup)
    if not 0 < warmup <= 1:
        raise ValueError(f"a fractional warmup must be in (0, 1], got {warmup!r}")
    return max(1, math.floor(Fraction(warmup).limit_denominator(10 ** 6) * total_steps))


def adamw_preset(params: Iterable, lr: float, total_steps: int, *, warmup: int | float = 0.1,
                 weight_decay: float = 0.01, schedule: str = "linear", clip_norm: float | None = 1.0,
                 optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW, final: float = 0.0) -> Preset:
    """AdamW (or ``optimizer_class`` with the same ``(params, lr=, weight_decay=)`` signature, e.g.
    :class:`kexue.optim.Lion`) on ``params`` (tensors or param groups; a group's own ``lr`` is scaled by
    the same schedule; groups of :func:`kexue.optim.param_groups.layerwise_lr_groups` are recorded in ``settings``
as ``param_groups``), ``schedule`` over ``total_steps`` updates with ``warmup`` (see the module doc),
    and the gradient ``clip_norm`` for :func:`kexue.train.fit`; ``final``: the lr fraction the ``decay`` schedule
    ends at."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or \
            not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                  or not (math.isfinite(clip_norm) and clip_norm > 0)):
        raise ValueError(f"clip_norm must be a positive finite number or None, got {clip_norm!r}")
    if isinstance(final, bool) or not isinstance(final, numbers.Real) or not (math.isfinite(final) and final >= 0):
        raise ValueError(f"final must be a finite number >= 0, got {final!r}")
    if final and schedule != "decay":
        raise ValueError(f"final={final!r} applies to schedule='decay' only, not {schedule!r}")
    w = warmup_steps(warmup, int(total_steps))
    params = list(params)
    groups = [g for g in params if isinstance(g, dict)]
    optimizer = optimizer_class(params, lr=lr, weight_decay=weight_decay)
    if schedule == "linear":
        fn = WarmupLinear(w, total_steps)
    elif schedule == "decay":
        fn = PiecewiseLinear({0: 1.0 / max(w, 1), max(w, 1) - 1: 1.0, max(int(total_steps), w): float(final)})
    else:
        fn = PiecewiseLinear({0: 1.0 / w, w - 1: 1.0}) if w > 1 else PiecewiseLinear({0: 1.0})
    settings = {"optimizer": optimizer_class.__name__, "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
                "warmup": w, "total_steps": int(total_steps), "clip_norm": clip_norm,
                **({"final": float(final)} if schedule == "decay" else {})}
    if any("lr_multiplier" in g for g in groups):  # per-parameter rates (kexue.optim.param_groups)
        settings["param_groups"] = describe_groups(groups)
    return Preset(optimizer, lambda_lr(optimizer, fn), clip_norm, settings)


__all__ = ["Preset", "SCHEDULES", "adamw_preset", "warmup_steps"]
