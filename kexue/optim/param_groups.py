r"""Per-parameter learning rates as optimizer param groups: layer-wise learning-rate decay and bert4keras's
parameter-wise multipliers.

* **Layer-wise LR decay** (LLRD; ULMFiT's discriminative fine-tuning, ELECTRA's ``layerwise_lr_decay``): the lower
  a layer, the more general what it holds, the less fine-tuning should move it. With ``L`` blocks and rate
  :math:`\rho \in (0, 1]`:

  .. math:: \text{lr}_\text{embeddings} = \text{lr}\cdot\rho^{L},\qquad
            \text{lr}_{\text{block } i} = \text{lr}\cdot\rho^{L-i}\ (i = 1..L),\qquad
            \text{lr}_\text{heads} = \text{lr}

  Depths come from the model (:meth:`kexue.models.base.Blocks.layer_depths`, duck-typed here: every submodule
  with a ``layer_depths()`` method is a backbone; a T5's decoder blocks sit above its encoder's; an ALBERT shared
  group takes the depth of the highest layer applying it); parameters outside any backbone (task heads) and a
  backbone's final norm, pooler and MLM / LM head get the full ``lr``.
* **Parameter-wise multipliers** (bert4keras ``optimizers.extend_with_parameter_wise_lr``):
  ``{pattern: m}``: a parameter whose name matches ``pattern`` (a regular expression searched in the full name,
  so a plain substring works as in bert4keras) trains at lr·m; several matching patterns multiply. A pattern that
  matches no trainable parameter is refused by name.

The two multiply: :math:`\text{lr}_p = \text{lr}\cdot\rho^{L-d(p)}\cdot\prod_{k: \text{pattern}_k \sim p} m_k`.
:func:`layerwise_lr_groups` returns torch param groups, one per distinct multiplier, each with its ``lr`` and
``lr_multiplier``; a ``LambdaLR`` schedule (:func:`kexue.optim.adamw_preset`) scales each group's own ``lr``.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Iterable, Sequence

from torch import nn


def _backbones(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost submodules (``model`` included) that say their parameters' depths."""
    found: list[tuple[str, nn.Module]] = []
    under = lambda name, prefix: prefix == "" or name == prefix or name.startswith(prefix + ".")  # noqa: E731
    for name, module in model.named_modules():
        if callable(getattr(module, "layer_depths", None)) and not any(under(name, p) for p, _ in found):
            found.append((name, module))
    return found


def _check_number(what: str, value, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= low \
            or (high is not None and value > high):
        bound = f"in ({low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")
    return float(value)


def lr_multipliers(model: nn.Module, decay: float | None = None,
                   multipliers: dict[str, float] | Sequence[tuple[str, float]] = ()) -> dict[str, float]:
    """``{parameter name: lr multiplier}`` of every trainable parameter of ``model`` (module doc)."""
    pairs = list(multipliers.items()) if isinstance(multipliers, dict) else [tuple(x) for x in multipliers]
    compiled = []
    for pattern, m in pairs:
        _check_number(f"lr multiplier of {pattern!r}", m, 0.0)
        try:
            compiled.append((pattern, re.compile(pattern), float(m)))
        except re.error as e:
            raise ValueError(f"lr multiplier pattern {pattern!r} is not a regular expression: {e}") from None
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth_factor: dict[str, float] = {}
    if decay is not None:
        rate = _check_number("layer-wise lr decay", decay, 0.0, 1.0)
        backbones = _backbones(model)
        if not backbones:
            raise ValueError(f"layer-wise lr decay: {type(model).__name__} holds no model whose layers have depths "
                             "(a kexue Transformer)")
        for prefix, module in backbones:
            depths, top = module.layer_depths()
            for name, d in depths.items():
                full = f"{prefix}.{name}" if prefix else name
                depth_factor[full] = rate ** (top - d) if d <= top else 1.0
    out: dict[str, float] = {}
    used = {pattern: False for pattern, _, _ in compiled}
    for name, _ in named:
        m = depth_factor.get(name, 1.0)
        for pattern, rx, k in compiled:
            if rx.search(name):
                m *= k
                used[pattern] = True
        out[name] = m
    unused = [p for p, hit in used.items() if not hit]
    if unused:
        sample = ", ".join(n for n, _ in named[:4])
        raise ValueError(f"lr multiplier pattern{'s' if len(unused) > 1 else ''} {', '.join(map(repr, unused))} "
                         f"match{'' if len(unused) > 1 else 'es'} no trainable parameter of the model (names look "
                         f"like: {sample}, ...)")
    return out


def layerwise_lr_groups(model: nn.Module, lr: float, decay: float | None = None,
                        multipliers: dict[str, float] | Sequence[tuple[str, float]] = ()) -> list[dict]:
    """Param groups of ``model``'s trainable parameters for an optimizer with peak learning rate ``lr``: one group
    per distinct multiplier (in the order of first appearance), ``{"params", "lr": lr·m, "lr_multiplier": m}``
    (module doc for ``decay`` and ``multipliers``)."""
    _check_number("lr", lr, 0.0)
    factors = lr_multipliers(model, decay, multipliers)
    params = dict(model.named_parameters())
    groups: dict[float, dict] = {}
    for name, m in factors.items():
        g = groups.setdefault(m, {"params": [], "lr": lr * m, "lr_multiplier": m})
        g["params"].append(params[name])
    return list(groups.values())


def describe_groups(groups: Iterable[dict]) -> list[dict]:
    """A JSON record of param groups: each group's ``lr_multiplier`` (1 when absent) and parameter count."""
    return [{"lr_multiplier": float(g.get("lr_multiplier", 1.0)), "parameters": len(list(g["params"]))}
            for g in groups]


__all__ = ["describe_groups", "layerwise_lr_groups", "lr_multipliers"]
