r"""The training tricks every fine-tuning recipe shares (``kexue classify / similarity / ner / reading / dialogue /
poem``): the options, their checks, their run record, and what they turn into (fit's ``adversarial``, the
optimizer's param groups, the model's ``recompute``). ``docs/training.md`` has the formulas and the posts.

* ``--adversarial fgm|pgd|vat|gp`` (:mod:`kexue.train.adversarial`; 《对抗训练浅谈：意义、方法和思考》,
  《泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练》): the token-embedding table perturbed by
  :math:`\epsilon\,g/\|g\|` (FGM), K projected steps of size α (PGD), the power-iteration direction that most
  changes the prediction, with KL weight w (VAT: needs the recipe's classifier logits, ``kexue classify`` only),
  or :math:`L + \tfrac12\epsilon\|\nabla_x L\|^2` (gradient penalty).
* ``--layer-lr-decay RATE``, ``--lr-multiplier PATTERN=MULT`` (:mod:`kexue.optim.param_groups`): embeddings
  lr·RATE^L, block i lr·RATE^(L−i), heads lr; parameters whose name matches PATTERN times MULT (bert4keras's
  parameter-wise rates). Names are the task model's: ``encoder.…`` for the backbone (``encoder.embeddings``,
  ``encoder.layers.3``, …), the recipe's head after it (``out`` for classify, ``head`` for ner, …).
* ``--recompute``: gradient checkpointing per Transformer block (:func:`kexue.models.set_recompute`), less activation
  memory for one more forward pass; the result is the same, so it is not a run setting (it may change on resume).
* ``--rdrop ALPHA`` (:mod:`kexue.losses.rdrop`; 《又是Dropout两次！这次它做到了有监督任务的SOTA》): two dropout
  passes, the mean of their losses + α·half their symmetric KL; where the recipe has a classifier.

A trick a recipe cannot apply is refused by name while parsing. The run record (``settings.json``, compared on
resume) holds each trick that is on; a run folder written before a trick existed reads it as off.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Callable, Iterable

from torch import nn

from kexue.recipes import args as at

ADVERSARIAL = ("fgm", "pgd", "vat", "gp")
#: optional tricks a recipe says it implements (the others are available to every recipe)
OPTIONAL = ("rdrop", "vat")
#: the run-record keys of the tricks: absent from a run folder = off
KEYS = ("adversarial", "layer_lr_decay", "lr_multipliers", "rdrop")
DEFAULTS = {"adv_epsilon": 1.0, "adv_steps": 3, "adv_alpha": 0.3, "adv_xi": 10.0, "adv_iters": 1, "adv_weight": 1.0}
#: the method-specific options and the methods they belong to
ONLY_FOR = {"adv_steps": ("pgd",), "adv_alpha": ("pgd",), "adv_xi": ("vat",), "adv_iters": ("vat",),
            "adv_weight": ("vat",), "adv_include_clean": ("fgm", "pgd")}


def multiplier(text: str) -> tuple[str, float]:
    """``PATTERN=MULT`` -> ``(pattern, mult)``: a regular expression and a positive number."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise argparse.ArgumentTypeError(f"expected PATTERN=MULT (e.g. encoder.embeddings=0.1), got {text!r}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"{pattern!r} is not a regular expression ({e})") from None
    return pattern, at.positive_float(value)


def add_options(p: argparse.ArgumentParser) -> None:
    """The tricks' argument group."""
    g = p.add_argument_group("training tricks (docs/training.md)")
    g.add_argument("--adversarial", choices=ADVERSARIAL, default=None,
                   help="adversarial training on the token-embedding table: fgm, pgd, vat (virtual: classifiers "
                        "only), gp (gradient penalty) (default: none)")
    g.add_argument("--adv-epsilon", type=at.positive_float, default=None, metavar="EPS",
                   help=f"perturbation norm ε over the whole table (gp: the penalty weight) (default: "
                        f"{DEFAULTS['adv_epsilon']:g})")
    g.add_argument("--adv-steps", type=at.positive_int, default=None, metavar="K",
                   help=f"PGD: projected steps (default: {DEFAULTS['adv_steps']})")
    g.add_argument("--adv-alpha", type=at.positive_float, default=None, metavar="A",
                   help=f"PGD: the size of each step (default: {DEFAULTS['adv_alpha']:g})")
    g.add_argument("--adv-xi", type=at.positive_float, default=None, metavar="XI",
                   help=f"VAT: the probe size ξ of the power iteration (default: {DEFAULTS['adv_xi']:g})")
    g.add_argument("--adv-iters", type=at.positive_int, default=None, metavar="N",
                   help=f"VAT: power iterations (default: {DEFAULTS['adv_iters']})")
    g.add_argument("--adv-weight", type=at.positive_float, default=None, metavar="W",
                   help=f"VAT: the weight of the KL term (default: {DEFAULTS['adv_weight']:g})")
    g.add_argument("--adv-include-clean", action="store_true",
                   help="FGM / PGD: descend the clean loss too (L(W) + L(W+Δ); the posts' code trains on L(W+Δ) only)")
    g.add_argument("--layer-lr-decay", type=at.probability, default=None, metavar="RATE",
                   help="layer-wise lr decay: embeddings lr·RATE^L, block i lr·RATE^(L-i), heads lr (default: off)")
    g.add_argument("--lr-multiplier", type=multiplier, action="append", default=None, metavar="PATTERN=MULT",
                   help="parameters whose name matches the regular expression PATTERN train at lr·MULT (repeatable; "
                        "matching patterns multiply) (default: none)")
    g.add_argument("--recompute", action="store_true",
                   help="gradient checkpointing per Transformer block: less activation memory, one more forward pass")
    g.add_argument("--rdrop", type=at.nonnegative_float, default=0.0, metavar="ALPHA",
                   help="R-Drop: two dropout passes, their mean loss + ALPHA·half their symmetric KL (0 = off)")


def check(p: argparse.ArgumentParser, args: argparse.Namespace, supports: Iterable[str],
          why_not: dict[str, str] | None = None) -> None:
    """Refuse (``p.error``, by name) what this recipe cannot apply and method options without their method;
    then fill the method defaults. ``supports``: the :data:`OPTIONAL` tricks the recipe implements;
    ``why_not``: the reason to give for each one it does not."""
    supports, why_not = set(supports), why_not or {}
    unknown = supports - set(OPTIONAL)
    if unknown:
        raise ValueError(f"unknown optional tricks {sorted(unknown)}; known: {OPTIONAL}")
    if args.rdrop and "rdrop" not in supports:
        reason = why_not.get("rdrop", "R-Drop compares the class distributions of two passes; it is implemented for "
                                      "kexue classify, similarity --loss sbert and ner (GlobalPointer heads)")
        p.error(f"--rdrop does not apply here: {reason}")
    if args.adversarial == "vat" and "vat" not in supports:
        p.error("--adversarial vat does not apply here: "
                + why_not.get("vat", "VAT keeps a classifier's predicted distribution steady; it is implemented for "
                                     "kexue classify"))
    method = args.adversarial
    if method is None and args.adv_epsilon is not None:
        p.error("--adv-epsilon needs --adversarial")
    for key, methods in ONLY_FOR.items():
        if getattr(args, key) not in (None, False) and method not in methods:
            p.error(f"--{key.replace('_', '-')} applies to --adversarial {' / '.join(methods)}"
                    + (f", not {method}" if method else ""))
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.layer_lr_decay is not None and args.layer_lr_decay <= 0:
        p.error("--layer-lr-decay must be in (0, 1]")


def record(args: argparse.Namespace) -> dict[str, Any]:
    """The tricks that are on, as run settings (compared on resume)."""
    out: dict[str, Any] = {}
    if args.adversarial:
        a = {"method": args.adversarial, "epsilon": args.adv_epsilon}
        if args.adversarial == "pgd":
            a.update(steps=args.adv_steps, alpha=args.adv_alpha)
        if args.adversarial == "vat":
            a.update(xi=args.adv_xi, iters=args.adv_iters, weight=args.adv_weight)
        if args.adversarial in ("fgm", "pgd"):
            a["include_clean"] = args.adv_include_clean
        out["adversarial"] = a
    if args.layer_lr_decay is not None:
        out["layer_lr_decay"] = args.layer_lr_decay
    if args.lr_multiplier:
        out["lr_multipliers"] = [[pattern, m] for pattern, m in args.lr_multiplier]
    if args.rdrop:
        out["rdrop"] = args.rdrop
    return out


def summary(args: argparse.Namespace) -> dict[str, Any]:
    """Every trick's value, for metrics.json (``recompute`` included)."""
    r = record(args)
    return {"adversarial": r.get("adversarial"), "layer_lr_decay": r.get("layer_lr_decay"),
            "lr_multipliers": r.get("lr_multipliers", []), "rdrop": args.rdrop, "recompute": args.recompute}


def card_lines(args: argparse.Namespace) -> list[str]:
    """The model card's line about the tricks (none when all are off)."""
    on = [f"{k}: {v}" for k, v in summary(args).items() if v not in (None, [], 0.0, False)]
    return [f"training tricks: {'; '.join(on)}"] if on else []


def adversarial(args: argparse.Namespace, logits: Callable[[nn.Module, Any], Any] | None = None):
    """The :mod:`kexue.train.adversarial` object of ``--adversarial`` (None when off); ``logits(model, batch)``:
    the classifier logits VAT keeps steady."""
    from kexue.train.adversarial import FGM, PGD, VAT, GradientPenalty

    method, eps = args.adversarial, args.adv_epsilon
    if method is None:
        return None
    if method == "fgm":
        return FGM(eps, include_clean=args.adv_include_clean)
    if method == "pgd":
        return PGD(eps, alpha=args.adv_alpha, steps=args.adv_steps, include_clean=args.adv_include_clean)
    if method == "gp":
        return GradientPenalty(eps)
    if logits is None:
        raise at.UsageError("--adversarial vat: this recipe gives no classifier logits to keep steady")
    return VAT(logits, epsilon=eps, xi=args.adv_xi, iters=args.adv_iters, weight=args.adv_weight)


def parameters(args: argparse.Namespace, module: nn.Module, lr: float) -> list:
    """``module``'s trainable parameters, or param groups under ``--layer-lr-decay`` / ``--lr-multiplier``."""
    from kexue.optim.param_groups import layerwise_lr_groups

    if args.layer_lr_decay is None and not args.lr_multiplier:
        return [p for p in module.parameters() if p.requires_grad]
    try:
        return layerwise_lr_groups(module, lr, args.layer_lr_decay, args.lr_multiplier or ())
    except ValueError as e:
        raise at.UsageError(f"--layer-lr-decay / --lr-multiplier: {e}") from None


def prepare_model(args: argparse.Namespace, module: nn.Module) -> None:
    """``--recompute``: gradient checkpointing in every Transformer of ``module``."""
    if args.recompute:
        from kexue.models.base import set_recompute

        set_recompute(module)


__all__ = ["ADVERSARIAL", "KEYS", "OPTIONAL", "add_options", "adversarial", "card_lines", "check", "multiplier",
           "parameters", "prepare_model", "record", "summary"]
