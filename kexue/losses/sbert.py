"""The two baselines of the CoSENT post: Sentence-BERT's softmax classifier and cosine regression.

《CoSENT（一）：比Sentence-BERT更有效的句向量方案》 compares CoSENT with the ways sentence vectors
were trained before it:

* SBERT (Reimers & Gurevych 2019): a classifier on the concatenation ``[u, v, |u − v|]``
      p(y | u, v) = softmax(W [u; v; |u − v|] + b),   loss = −log p(y | u, v)
  The post's point: training and prediction disagree (we train a classifier, then rank by cos(u, v)),
  so the vectors are only indirectly made comparable by cosine.
* Cosine regression: loss = mean((cos(u, v) − y)²) with y rescaled to [0, 1] (or {0, 1}); it pulls
  every pair towards an absolute target although only the *order* of the scores matters for ranking,
  which CoSENT optimises directly (:mod:`kexue.losses.cosent`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_pairs(u: Tensor, v: Tensor, labels: Tensor, name: str) -> None:
    if u.dim() != 2 or u.shape != v.shape:
        raise ValueError(f"{name} needs paired embeddings [N, d] of one shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    if labels.reshape(-1).numel() != u.shape[0]:
        raise ValueError(f"{name} needs one label per pair: {u.shape[0]} pairs, {labels.numel()} labels")
    if u.shape[0] == 0:
        raise ValueError(f"{name} needs a non-empty batch")


class SBERTClassifier(nn.Module):
    """The softmax head of SBERT: logits = W [u; v; |u − v|] + b (features chosen by the flags)."""

    def __init__(self, dim: int, num_labels: int, concat_uv: bool = True, concat_diff: bool = True,
                 concat_mul: bool = False):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"SBERT's softmax classifier needs num_labels >= 2, got {num_labels}")
        self.concat_uv, self.concat_diff, self.concat_mul = concat_uv, concat_diff, concat_mul
        n = 2 * concat_uv + concat_diff + concat_mul
        if n == 0:
            raise ValueError("SBERTClassifier needs at least one of concat_uv, concat_diff, concat_mul")
        self.dense = nn.Linear(n * dim, num_labels)

    def features(self, u: Tensor, v: Tensor) -> Tensor:
        parts = ([u, v] if self.concat_uv else []) + ([(u - v).abs()] if self.concat_diff else [])
        parts += [u * v] if self.concat_mul else []
        return torch.cat(parts, -1)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return self.dense(self.features(u, v))


def sbert_softmax_loss(u: Tensor, v: Tensor, labels: Tensor, classifier: SBERTClassifier) -> Tensor:
    """Cross-entropy of ``classifier(u, v)`` against integer class ``labels`` ``[N]``."""
    _check_pairs(u, v, labels, "SBERT softmax loss")
    labels = labels.reshape(-1)
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise ValueError("SBERT softmax loss needs integer class labels; use --loss cosine or cosent for scores")
        labels = labels.long()
    k = classifier.dense.out_features
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"SBERT softmax loss: labels must lie in [0, {k - 1}], got {int(labels.min())}..{int(labels.max())}")
    return F.cross_entropy(classifier(u, v).float(), labels)


def cosine_mse_loss(u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
    """mean((cos(u, v) − y)²); ``labels`` already on the cosine's scale (e.g. score / 5 or 0/1)."""
    _check_pairs(u, v, labels, "cosine loss")
    cos = F.cosine_similarity(u.float(), v.float(), dim=-1)
    return F.mse_loss(cos, labels.reshape(-1).to(cos.dtype))
