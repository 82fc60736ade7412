"""CoSENT: loss = log(1 + Σ_{y_i > y_j} exp(λ·(s_j − s_i))).

《CoSENT（一）：比Sentence-BERT更有效的句向量方案》 and 《CoSENT（三）：作为交互式相似度的损失函数》.
For sentence vectors s = cos(u, v) and λ = 20; for a cross-encoder s is its raw logit and λ = 1.
Only the *order* of the labels matters: every pair of examples whose labels are ordered
contributes a softplus-like term pushing the higher-labelled score above the lower one.

``gather=True``: with several processes each holding a slice of the batch, the scores and labels of
all ranks are gathered first (:mod:`kexue.layers.distributed`), so the pairs span the global batch and
N processes compute exactly the loss and gradients of one process with the global batch. Leave it
False when every rank computes the whole batch (e.g. kexue's index-list batches, which ``fit`` does not
shard): gathering would then repeat the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.layers.distributed import all_gather, all_gather_with_grad


def cosent_ranking_loss(scores: Tensor, labels: Tensor, scale: float = 1.0, gather: bool = False) -> Tensor:
    """CoSENT on ``[N]`` scores against ``[N]`` labels (any real-valued, only their order is used).

    Tied labels contribute nothing; masked entries use a large finite negative (not −inf) so that
    gradients stay finite when every label in the batch ties. ``gather``: over all processes' batches.
    """
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    if scores.numel() != labels.numel():
        raise ValueError(f"CoSENT needs one label per score: {scores.numel()} scores, {labels.numel()} labels")
    if gather:
        scores, labels = all_gather_with_grad(scores), all_gather(labels)
    if scores.numel() == 0:
        raise ValueError("CoSENT needs a non-empty batch")
    s = scores.float() * scale
    diff = s[None, :] - s[:, None]  # diff[i, j] = s_j − s_i
    ordered = labels[:, None] > labels[None, :]  # y_i > y_j: s_j should be below s_i
    diff = diff.masked_fill(~ordered, -1e12)
    # The leading 0 is the "1 +" inside the log.
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.reshape(-1)]), dim=0)


def cosent_loss(a: Tensor, b: Tensor, labels: Tensor, scale: float = 20.0, gather: bool = False) -> Tensor:
    """CoSENT for sentence vectors: ``a``, ``b`` are ``[N, d]`` embeddings of the two sides."""
    if a.shape != b.shape:
        raise ValueError(f"CoSENT needs paired embeddings of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return cosent_ranking_loss(F.cosine_similarity(a, b, dim=-1), labels, scale, gather)


def cosent_cross_encoder_loss(logits: Tensor, labels: Tensor, scale: float = 1.0, gather: bool = False) -> Tensor:
    """CoSENT for a cross-encoder: ``logits`` ``[N]`` (or ``[N, 1]``) scores of the concatenated pairs."""
    return cosent_ranking_loss(logits, labels, scale, gather)
