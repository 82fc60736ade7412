r"""InfoNCE with in-batch negatives, and SimCSE — 《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》
(SimCSE: Gao, Yao & Chen 2021, "Simple Contrastive Learning of Sentence Embeddings").

For anchors :math:`a_i`, their positives :math:`p_i` and optional hard negatives :math:`n_{i,1..k}`, with
:math:`s = 1/\tau` the scale,

.. math::
    L = -\frac1N\sum_i \log\frac{e^{s\cos(a_i,p_i)}}
        {\sum_j e^{s\cos(a_i,p_j)} + \sum_{j,l} e^{s\cos(a_i,n_{j,l})}}

every other row's positive and every row's hard negatives are negatives of :math:`a_i` (the loss
sentence-transformers calls MultipleNegativesRankingLoss). :math:`s = 20` (:math:`\tau = 0.05`) as in
SimCSE and the post.

* **Unsupervised SimCSE** (:func:`simcse_loss`): a batch encoded twice with dropout on; each view is the
  other's positive. ``form="post"`` is the blog's bert4keras version: the batch holds every sentence twice
  (``x1, x1, x2, x2, …``), and each of the 2N vectors must pick its twin among the other 2N−1 (SimBERT's
  loss, :func:`kexue.losses.contrastive.simbert_contrastive_loss`, with λ = 20). ``form="paper"`` is the
  SimCSE paper's: view-1 rows against view-2 rows only (N×N), i.e. :func:`infonce_loss` (view1, view2).
* **Supervised SimCSE / InfoNCE with hard negatives** (:func:`infonce_loss`): (anchor, entailment,
  contradiction) triplets, or any (query, positive[, negatives]) batch.

``gather=True`` gathers anchors, positives and negatives of all processes first
(:mod:`kexue.layers.distributed`), so that N processes each holding a slice of the batch compute exactly
the loss and gradients of one process with the global batch (more negatives per anchor for free).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.layers.distributed import all_gather_with_grad
from kexue.losses.contrastive import interleave, simbert_contrastive_loss


def _fp32_or_wider(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def infonce_loss(anchors: Tensor, positives: Tensor, negatives: Tensor | None = None, scale: float = 20.0,
                 gather: bool = False) -> Tensor:
    """Mean cross-entropy of each anchor over all positives and hard negatives of the batch (module doc).

    ``anchors``, ``positives``: ``[N, d]``; ``negatives``: ``[N, d]`` (one per anchor) or ``[N, k, d]``.
    """
    if anchors.dim() != 2 or anchors.shape != positives.shape:
        raise ValueError(f"InfoNCE needs [N, d] anchors and positives of one shape, got {tuple(anchors.shape)} "
                         f"and {tuple(positives.shape)}")
    if negatives is not None:
        if negatives.dim() == 2:
            negatives = negatives.unsqueeze(1)
        if negatives.dim() != 3 or negatives.shape[0] != anchors.shape[0] or negatives.shape[2] != anchors.shape[1]:
            raise ValueError(f"InfoNCE hard negatives must be [N, d] or [N, k, d] for {tuple(anchors.shape)} anchors, "
                             f"got {tuple(negatives.shape)}")
    if not scale > 0:
        raise ValueError(f"InfoNCE scale (1/temperature) must be > 0, got {scale}")
    if gather:
        anchors, positives = all_gather_with_grad(anchors), all_gather_with_grad(positives)
        negatives = all_gather_with_grad(negatives) if negatives is not None else None
    if anchors.shape[0] == 0:
        raise ValueError("InfoNCE needs a non-empty batch")
    candidates = [positives] + ([negatives[:, j] for j in range(negatives.shape[1])] if negatives is not None else [])
    a = F.normalize(_fp32_or_wider(anchors), dim=-1)
    c = F.normalize(_fp32_or_wider(torch.cat(candidates)), dim=-1)
    logits = a @ c.T * scale  # [N, N(1 + k)]: row i's positive is column i
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def simcse_loss(view1: Tensor, view2: Tensor, scale: float = 20.0, form: Literal["post", "paper"] = "post",
                gather: bool = False) -> Tensor:
    """Unsupervised SimCSE on two dropout views ``[N, d]`` of the same sentences (module doc for ``form``)."""
    if view1.shape != view2.shape:
        raise ValueError(f"SimCSE needs two views of one shape, got {tuple(view1.shape)} and {tuple(view2.shape)}")
    if form == "post":
        return simbert_contrastive_loss(interleave(view1, view2), scale, gather)
    if form == "paper":
        return infonce_loss(view1, view2, scale=scale, gather=gather)
    raise ValueError(f"SimCSE form must be 'post' or 'paper', got {form!r}")
