"""SimBERT's in-batch contrastive loss: L = −Σ_i log softmax_j≠i(λ·cos(v_i, v_j))[partner(i)], λ = 30.

《鱼与熊掌兼得：融合检索和生成的SimBERT模型》. The batch is laid out as ``[a_1, b_1, a_2, b_2, …]``:
each sentence's positive is its partner, and every other sentence of the batch (both sides)
is a negative. The diagonal is masked since a sentence is trivially similar to itself.

The same loss with λ = 20 on a batch holding every sentence twice (two dropout views) is unsupervised
SimCSE as the blog trains it (:func:`kexue.losses.infonce.simcse_loss`). ``gather=True`` gathers the
vectors of all processes first (:mod:`kexue.layers.distributed`): N processes each holding an even
slice of the interleaved batch then compute exactly the loss and gradients of one process with the
global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.layers.distributed import all_gather_with_grad


def interleave(a: Tensor, b: Tensor) -> Tensor:
    """``[N, d]`` and ``[N, d]`` -> ``[2N, d]`` as ``a_1, b_1, a_2, b_2, …``."""
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must share a shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return torch.stack([a, b], dim=1).reshape(-1, a.shape[-1])


def simbert_contrastive_loss(vectors: Tensor, scale: float = 30.0, gather: bool = False) -> Tensor:
    """Mean cross-entropy over a ``[2N, d]`` batch of interleaved pairs (row 2k pairs with 2k+1);
    ``gather``: over all processes' batches."""
    n = vectors.shape[0]
    if n % 2 or (n < 2 and not gather):
        raise ValueError(f"SimBERT contrastive loss needs an even batch of interleaved pairs, got {n} rows")
    if gather:
        vectors = all_gather_with_grad(vectors)
        n = vectors.shape[0]
        if n < 2:
            raise ValueError("SimBERT contrastive loss needs at least one pair in the gathered batch")
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.T * scale
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=v.device), -1e12)
    target = torch.arange(n, device=v.device) ^ 1  # 0<->1, 2<->3, …
    return F.cross_entropy(sim, target)
