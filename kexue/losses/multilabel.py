"""Multilabel categorical cross-entropy (dense and sparse forms).

《将“softmax+交叉熵”推广到多标签分类问题》: with scores s_i, positives Ω_pos and negatives Ω_neg,

    L = log(1 + Σ_{i∈Ω_neg} e^{s_i}) + log(1 + Σ_{j∈Ω_pos} e^{-s_j})

i.e. every positive score should exceed 0 and every negative one fall below 0, with no class
imbalance weighting needed. The sparse form (bert4keras's
``sparse_multilabel_categorical_crossentropy``, written for GlobalPointer) takes the positive *indices* and uses
log(1 + Σ_neg e^s) = log(1 + Σ_all e^s) + log(1 - e^{log Σ_pos e^s - log(1 + Σ_all e^s)}),
so it never builds the dense 0/1 target (GlobalPointer has H·L² classes per sentence).
"""
from __future__ import annotations

import torch
from torch import Tensor

_BIG = 1e12


def multilabel_categorical_crossentropy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """``y_true`` 0/1 and ``y_pred`` scores of the same shape ``[..., n]`` -> loss ``[...]``."""
    y_true = y_true.to(y_pred.dtype)
    s = (1 - 2 * y_true) * y_pred  # negate positives: both terms become log(1 + Σ e^{·})
    s_neg = s - y_true * _BIG
    s_pos = s - (1 - y_true) * _BIG
    zeros = torch.zeros_like(s[..., :1])
    neg = torch.logsumexp(torch.cat([s_neg, zeros], dim=-1), dim=-1)
    pos = torch.logsumexp(torch.cat([s_pos, zeros], dim=-1), dim=-1)
    return neg + pos


def sparse_multilabel_categorical_crossentropy(y_true: Tensor, y_pred: Tensor, pad: int = -1,
                                               eps: float = 1e-7) -> Tensor:
    """``y_true [..., k]`` positive class indices (``pad`` = none; no duplicates), ``y_pred [..., n]``.

    Returns the same loss as the dense form, shape ``[...]``.
    """
    valid = y_true != pad
    pos = y_pred.gather(-1, y_true.clamp(min=0).long())  # [..., k]
    zeros = torch.zeros_like(y_pred[..., :1])
    # positive term: log(1 + Σ_pos e^{-s}); padded slots contribute e^{-∞} = 0
    pos_loss = torch.logsumexp(torch.cat([(-pos).masked_fill(~valid, -_BIG), zeros], dim=-1), dim=-1)
    # negative term through "all minus positives", never materialising the negative set
    all_loss = torch.logsumexp(torch.cat([y_pred, zeros], dim=-1), dim=-1)
    aux = torch.logsumexp(pos.masked_fill(~valid, -_BIG), dim=-1) - all_loss
    aux = torch.clamp(1 - torch.exp(aux), eps, 1)
    return pos_loss + all_loss + torch.log(aux)


def globalpointer_crossentropy(logits: Tensor, spans: Tensor, pad: int = -1) -> Tensor:
    """GlobalPointer loss: ``logits [B, H, L, L]``, ``spans [B, H, k]`` flat indices start·L + end.

    Sparse multilabel CE over each type's L² span scores, averaged over batch and types.
    """
    B, H, L, _ = logits.shape
    return sparse_multilabel_categorical_crossentropy(spans, logits.reshape(B, H, L * L), pad=pad).mean()
