"""SimBERT's in-batch contrastive loss: L = −Σ_i log softmax_j≠i(λ·cos(v_i, v_j))[partner(i)], λ = 30.

《鱼与熊掌兼得：融合检索和生成的SimBERT模型》. The batch is laid out as ``[a_1, b_1, a_2, b_2, …]``:
each sentence's positive is its partner, and every other sentence of the batch (both sides)
is a negative. The diagonal is masked since a sentence is trivially similar to itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def interleave(a: Tensor, b: Tensor) -> Tensor:
    """``[N, d]`` and ``[N, d]`` -> ``[2N, d]`` as ``a_1, b_1, a_2, b_2, …``."""
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must share a shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return torch.stack([a, b], dim=1).reshape(-1, a.shape[-1])


def simbert_contrastive_loss(vectors: Tensor, scale: float = 30.0) -> Tensor:
    """Mean cross-entropy over a ``[2N, d]`` batch of interleaved pairs (row 2k pairs with 2k+1)."""
    n = vectors.shape[0]
    if n < 2 or n % 2:
        raise ValueError(f"SimBERT contrastive loss needs an even batch of interleaved pairs, got {n} rows")
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.T * scale
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=v.device), -1e12)
    target = torch.arange(n, device=v.device) ^ 1  # 0<->1, 2<->3, …
    return F.cross_entropy(sim, target)
