r"""R-Drop — 《又是Dropout两次！这次它做到了有监督任务的SOTA》 (Liang et al. 2021, *R-Drop: Regularized Dropout
for Neural Networks*): run the same batch through the model twice, so that dropout draws two sub-models, and ask
them to agree. With the two predicted distributions :math:`P_1, P_2` of an example of label :math:`y`:

.. math::
    \mathcal{L} = \tfrac12\big[-\log P_1(y) - \log P_2(y)\big]
                  + \alpha\cdot\tfrac12\big[\mathrm{KL}(P_1\Vert P_2) + \mathrm{KL}(P_2\Vert P_1)\big]

averaged over the batch (the paper's code: ``ce_loss = 0.5·(ce₁ + ce₂)``, ``loss = ce_loss + α·(kl₁₂ + kl₂₁)/2``;
the post's bert4keras code writes the same objective as mean CE over the duplicated batch + α/4·(kl₁₂ + kl₂₁)
with twice the α). The post reads it as a regulariser that shrinks the gap between the training-time (dropout)
and inference-time (no dropout) models.

:func:`rdrop_loss` is the softmax case (classification); :func:`rdrop_combine` is the shared combination for any
pair of task losses and a symmetric divergence summed both ways, e.g. GlobalPointer's
:func:`kexue.losses.globalpointer_kl` (《GlobalPointer下的“KL散度”应该是怎样的？》), whose scores are not one
distribution but independent sigmoids.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def symmetric_kl(logits1: Tensor, logits2: Tensor) -> Tensor:
    """KL(P₁‖P₂) + KL(P₂‖P₁) of the softmax distributions over the last axis, averaged over the other axes."""
    if logits1.shape != logits2.shape:
        raise ValueError(f"R-Drop: the two passes' logits differ in shape: {tuple(logits1.shape)} vs "
                         f"{tuple(logits2.shape)}")
    lp, lq = F.log_softmax(logits1.float(), -1), F.log_softmax(logits2.float(), -1)
    return ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()


def rdrop_combine(loss1: Tensor, loss2: Tensor, divergence: Tensor, alpha: float) -> Tensor:
    """½(loss₁ + loss₂) + α·½·divergence, ``divergence`` the sum of both KL directions (module doc)."""
    if alpha < 0:
        raise ValueError(f"R-Drop: alpha must be >= 0, got {alpha}")
    return (loss1 + loss2) / 2 + alpha * divergence / 2


def rdrop_loss(logits1: Tensor, logits2: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """R-Drop for a softmax classifier: the two passes' ``[N, C]`` logits, integer ``labels [N]`` (module doc)."""
    if logits1.dim() != 2:
        raise ValueError(f"R-Drop: logits must be [batch, classes], got shape {tuple(logits1.shape)}")
    ce = F.cross_entropy(logits1.float(), labels), F.cross_entropy(logits2.float(), labels)
    return rdrop_combine(ce[0], ce[1], symmetric_kl(logits1, logits2), alpha)


__all__ = ["rdrop_combine", "rdrop_loss", "symmetric_kl"]
