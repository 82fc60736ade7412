"""GlobalPointer and Efficient GlobalPointer span heads.

《GlobalPointer：用统一的方式处理嵌套和非嵌套NER》 scores every span [i, j] of type α by

    s_α(i, j) = (R_i q_{i,α})ᵀ (R_j k_{j,α}) / √d,    q_{i,α} = W_{q,α} h_i,  k_{j,α} = W_{k,α} h_j

with RoPE rotations R_i so that the score depends on the relative offset j - i. Spans with j < i
and spans touching padding get a large negative score (-1e12, "−∞-like", finite so losses stay
finite) and are never decoded.

《Efficient GlobalPointer：少点参数，多点效果》 shares one (q, k) projection among all types and
adds a per-type start and end bias read from the same features:

    s_α(i, j) = (R_i q_i)ᵀ (R_j k_j) / √d + w_{α,start}ᵀ [q_i; k_i] / 2 + w_{α,end}ᵀ [q_j; k_j] / 2
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kexue.layers.positions import RotaryEmbedding

NEG_INF = -1e12  # bert4keras's K.infinity(): finite so that exp() is 0 and gradients stay finite


def span_mask(mask: Tensor) -> Tensor:
    """``[B, L]`` 1/0 token mask -> ``[B, 1, L, L]`` bool: both ends valid and start <= end."""
    m = mask.bool()
    valid = m[:, None, :, None] & m[:, None, None, :]
    L = mask.shape[1]
    upper = torch.ones(L, L, dtype=torch.bool, device=mask.device).triu()
    return valid & upper


def mask_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Set padded spans and spans with end < start to :data:`NEG_INF`."""
    L = logits.shape[-1]
    if mask is None:
        mask = torch.ones(logits.shape[0], L, dtype=torch.bool, device=logits.device)
    return logits.masked_fill(~span_mask(mask), NEG_INF)


class _RotarySpans(nn.Module):
    """Shared RoPE step: rotate ``[B, H, L, D]`` start/end vectors by their token positions."""

    def __init__(self, head_size: int, rope: bool):
        super().__init__()
        self.head_size = head_size
        self.rope = RotaryEmbedding(head_size) if rope else None

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        if self.rope is None:
            return q, k
        cos, sin = self.rope(torch.arange(q.shape[-2], device=q.device), dtype=q.dtype)
        return self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin)


class GlobalPointer(_RotarySpans):
    """``hidden [B, L, dim]`` -> span logits ``[B, heads, L, L]`` (one head per entity type)."""

    def __init__(self, dim: int, heads: int, head_size: int = 64, rope: bool = True, bias: bool = True):
        super().__init__(head_size, rope)
        self.heads = heads
        self.dense = nn.Linear(dim, heads * head_size * 2, bias=bias)

    def start_end(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated start (q) and end (k) vectors, each ``[B, heads, L, head_size]``."""
        B, L, _ = hidden.shape
        x = self.dense(hidden).view(B, L, self.heads, 2, self.head_size)
        q, k = x[..., 0, :].transpose(1, 2), x[..., 1, :].transpose(1, 2)
        return self.rotate(q, k)

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k = self.start_end(hidden)
        logits = q @ k.transpose(-1, -2) / self.head_size**0.5
        return mask_logits(logits, mask)


class EfficientGlobalPointer(_RotarySpans):
    """GlobalPointer with one shared (q, k) projection plus per-type start/end biases."""

    def __init__(self, dim: int, heads: int, head_size: int = 64, rope: bool = True, bias: bool = True):
        super().__init__(head_size, rope)
        self.heads = heads
        self.dense = nn.Linear(dim, head_size * 2, bias=bias)
        self.type_bias = nn.Linear(head_size * 2, heads * 2, bias=bias)

    def start_end(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated shared start (q) and end (k) vectors, each ``[B, 1, L, head_size]``."""
        return self._rotated(self.dense(hidden))

    def _rotated(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotate(x[..., ::2].unsqueeze(1), x[..., 1::2].unsqueeze(1))

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.dense(hidden)
        q, k = self._rotated(x)
        logits = q @ k.transpose(-1, -2) / self.head_size**0.5  # [B, 1, L, L]
        b = self.type_bias(x).transpose(1, 2) / 2  # [B, 2H, L]; even rows: start, odd rows: end
        logits = logits + b[:, 0::2, :, None] + b[:, 1::2, None, :]
        return mask_logits(logits, mask)


def decode_spans(logits: Tensor, threshold: float = 0.0, flat: bool = False) -> list[set[tuple[int, int, int]]]:
    """``[B, H, L, L]`` logits -> per example the set of ``(type, start, end)`` with score > threshold.

    Masked spans hold :data:`NEG_INF` and therefore never pass any sane threshold. GlobalPointer decodes
    nested spans (every span over the threshold, overlapping or not); ``flat=True`` is for flat (non-overlapping)
    data: the spans over the threshold are taken greedily by score, highest first (ties: earlier start, then
    earlier end, then lower type), each kept only if it shares no position with a span already kept.
    """
    if threshold <= NEG_INF / 2:
        raise ValueError("threshold must be above the masked-span score")
    out: list[set[tuple[int, int, int]]] = [set() for _ in range(logits.shape[0])]
    hits = (logits > threshold).nonzero().tolist()
    if not flat:
        for b, t, i, j in hits:
            out[b].add((t, i, j))
        return out
    scores = logits.detach().float()
    ranked = sorted(hits, key=lambda h: (h[0], -scores[h[0], h[1], h[2], h[3]].item(), h[2], h[3], h[1]))
    covered = [[False] * logits.shape[-1] for _ in range(logits.shape[0])]
    for b, t, i, j in ranked:
        if not any(covered[b][i:j + 1]):
            out[b].add((t, i, j))
            covered[b][i:j + 1] = [True] * (j + 1 - i)
    return out
