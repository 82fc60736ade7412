"""CoSENT: loss = log(1 + Σ_{y_i > y_j} exp(λ·(s_j − s_i))).

《CoSENT（一）：比Sentence-BERT更有效的句向量方案》 and 《CoSENT（三）：作为交互式相似度的损失函数》.
For sentence vectors s = cos(u, v) and λ = 20; for a cross-encoder s is its raw logit and λ = 1.
Only the *order* of the labels matters: every pair of examples whose labels are ordered
contributes a softplus-like term pushing the higher-labelled score above the lower one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosent_ranking_loss(scores: Tensor, labels: Tensor, scale: float = 1.0) -> Tensor:
    """CoSENT on ``[N]`` scores against ``[N]`` labels (any real-valued, only their order is used).

    Tied labels contribute nothing; masked entries use a large finite negative (not −inf) so that
    gradients stay finite when every label in the batch ties.
    """
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    if scores.numel() != labels.numel():
        raise ValueError(f"CoSENT needs one label per score: {scores.numel()} scores, {labels.numel()} labels")
    if scores.numel() == 0:
        raise ValueError("CoSENT needs a non-empty batch")
    s = scores.float() * scale
    diff = s[None, :] - s[:, None]  # diff[i, j] = s_j − s_i
    ordered = labels[:, None] > labels[None, :]  # y_i > y_j: s_j should be below s_i
    diff = diff.masked_fill(~ordered, -1e12)
    # The leading 0 is the "1 +" inside the log.
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.reshape(-1)]), dim=0)


def cosent_loss(a: Tensor, b: Tensor, labels: Tensor, scale: float = 20.0) -> Tensor:
    """CoSENT for sentence vectors: ``a``, ``b`` are ``[N, d]`` embeddings of the two sides."""
    if a.shape != b.shape:
        raise ValueError(f"CoSENT needs paired embeddings of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return cosent_ranking_loss(F.cosine_similarity(a, b, dim=-1), labels, scale)


def cosent_cross_encoder_loss(logits: Tensor, labels: Tensor, scale: float = 1.0) -> Tensor:
    """CoSENT for a cross-encoder: ``logits`` ``[N]`` (or ``[N, 1]``) scores of the concatenated pairs."""
    return cosent_ranking_loss(logits, labels, scale)
