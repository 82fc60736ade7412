"""Symmetric KL divergence between two GlobalPointer outputs, for R-Drop.

《GlobalPointer下的KL散度》: reading each span score s_i as an independent binary classifier
p_i = σ(s_i) and symmetrising, the KL between score vectors s and t reduces to

    D(s, t) = Σ_i (σ(s_i) - σ(t_i)) (s_i - t_i)

which is symmetric, zero iff s = t, and positive otherwise (σ is increasing). Masked spans hold the
same −∞-like score in both passes and contribute 0.
"""
from __future__ import annotations

import torch
from torch import Tensor


def globalpointer_kl(s: Tensor, t: Tensor) -> Tensor:
    """``s``, ``t`` logits ``[B, ...]`` -> mean over the batch of Σ (σ(s) - σ(t))(s - t)."""
    if s.shape != t.shape:
        raise ValueError(f"shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")
    d = (torch.sigmoid(s) - torch.sigmoid(t)) * (s - t)
    return d.reshape(s.shape[0], -1).sum(-1).mean()
