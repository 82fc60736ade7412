"""Position encodings: learned, sinusoidal, rotary (RoPE 1-D / 2-D) and hierarchical decomposition.

Posts: 《Transformer升级之路：2、博采众长的旋转式位置编码》, 《Transformer升级之路：4、二维位置的旋转式位置编码》,
《层次分解位置编码，让BERT可以处理超长文本》.

RoPE (《Transformer升级之路：2、博采众长的旋转式位置编码》): for a pair of channels (x_{2i}, x_{2i+1})
at position m, rotate by the angle m·θ_i with θ_i = base^{-2i/d}:

    (x_{2i}, x_{2i+1}) -> (x_{2i} cos mθ_i - x_{2i+1} sin mθ_i,  x_{2i+1} cos mθ_i + x_{2i} sin mθ_i)

so that <R_m q, R_n k> depends only on m - n. RoFormer pairs neighbouring channels (interleaved);
GPT-NeoX / LLaMA pair channel i with i + d/2 (``interleaved=False``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal(n_positions: int, dim: int, base: float = 10000.0, dtype=torch.float32) -> Tensor:
    """``[n, dim]`` table ``[sin(mθ_0..θ_{d/2-1}), cos(mθ_0..θ_{d/2-1})]`` (RoFormer / HF layout)."""
    inv_freq = base ** (-torch.arange(0, dim // 2, dtype=torch.float64) * 2.0 / dim)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


class RotaryEmbedding(nn.Module):
    """Produces (cos, sin) for positions and applies the rotation to ``[B, H, L, D]`` tensors."""

    def __init__(self, head_dim: int, base: float = 10000.0, interleaved: bool = True):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim, self.base, self.interleaved = head_dim, base, interleaved

    def inv_freq(self, device=None) -> Tensor:
        """θ_i = base^{-2i/d}, i = 0 … d/2-1, in float64 (angles are formed in float64, then cast)."""
        return self.base ** (-torch.arange(0, self.head_dim // 2, dtype=torch.float64, device=device) * 2.0
                             / self.head_dim)

    def cos_sin(self, angles: Tensor, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """Per-pair angles ``[..., D/2]`` -> cos, sin ``[..., D]`` in this rotary's channel layout."""
        if self.interleaved:
            angles = angles.repeat_interleave(2, dim=-1)
        else:
            angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, positions: Tensor, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """``positions``: ``[L]`` or ``[B, L]`` integer positions -> cos, sin of shape ``[..., L, D]``."""
        if positions.dim() > 2:
            raise ValueError(
                f"RoPE takes position ids of shape [L] or [B, L], got {tuple(positions.shape)}; 2-D/3-D "
                "positions ([B, L, 2] / [B, L, 3]) need RoPE-Tie (kexue config option rope_tie=True)"
            )
        angles = positions.to(torch.float64)[..., None] * self.inv_freq(positions.device)
        return self.cos_sin(angles, dtype)

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Apply R_m to ``x [B, H, L, D]`` given cos/sin ``[L, D]`` or ``[B, L, D]``; the result keeps ``x``'s
        dtype (a bf16 model's q, k, v stay bf16 while the angles are fp32)."""
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]
        if self.interleaved:
            rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
        else:
            half = x.shape[-1] // 2
            rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return (x * cos + rotated * sin).to(x.dtype)


def rope_2d_positions(height: int, width: int) -> Tensor:
    """``[H*W, 2]`` (row, col) positions for RoPE-2D (《Transformer升级之路：4、二维位置的旋转式位置编码》).

    RoPE-2D splits the head dimension in two halves and rotates the first by the row index and the
    second by the column index; see :func:`apply_rope_2d`.
    """
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return torch.stack([rows, cols], dim=-1)


def apply_rope_2d(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate ``x [B, H, L, D]`` with 2-D positions ``[L, 2]``: first D/2 channels by row, rest by column."""
    d = x.shape[-1]
    if d % 4:
        raise ValueError(f"RoPE-2D needs a head dimension divisible by 4, got {d}")
    rope = RotaryEmbedding(d // 2, base)
    out = []
    for axis, part in enumerate(x.split(d // 2, dim=-1)):
        cos, sin = rope(positions[:, axis])
        out.append(rope.rotate(part, cos.to(x.dtype), sin.to(x.dtype)))
    return torch.cat(out, dim=-1)


def hierarchical_positions(table: Tensor, n_positions: int, alpha: float = 0.4) -> Tensor:
    """Extend a learned ``[n, d]`` table to ``n_positions`` (《层次分解位置编码，让BERT可以处理超长文本》).

    With u_i = (p_i - α p_1) / (1 - α), position (i·n + j) gets q = α u_i + (1 - α) u_j, which
    equals the original p_j for i = 0, so the first n positions are unchanged.
    """
    n = table.shape[0]
    if n_positions > n * n:
        raise ValueError(f"hierarchical decomposition reaches at most {n * n} positions")
    return hierarchical_lookup(table, torch.arange(n_positions, device=table.device), alpha)


def hierarchical_lookup(table: Tensor, position_ids: Tensor, alpha: float = 0.4) -> Tensor:
    """The hierarchical embedding of each of ``position_ids`` (any shape) from a learned ``[n, d]`` table.
    Ids below n return the trained rows themselves (the formula gives p_j for i = 0 only up to rounding),
    so inputs no longer than the table are unchanged bit for bit."""
    if not 0 < alpha < 1 or alpha == 0.5:
        raise ValueError(f"hierarchical_alpha must lie in (0, 1) and differ from 0.5, got {alpha}")
    n = table.shape[0]
    u = (table - alpha * table[:1]) / (1 - alpha)
    out = alpha * u[position_ids // n] + (1 - alpha) * u[position_ids % n]
    return torch.where((position_ids < n)[..., None], table[position_ids.clamp(max=n - 1)], out)


def entropy_invariant_scale(n_keys: Tensor, train_len: int) -> Tensor:
    """log n / log N factor on the attention logits (《从熵不变性看Attention的Scale操作》).

    Multiplying QK^T/√d by log n / log N (N the training length) keeps the attention entropy
    roughly constant when the number n of visible keys changes.
    """
    n = n_keys.clamp(min=2).to(torch.float64)
    scale = torch.log(n) / math.log(train_len)
    # exactly 1 at the training length, so attention there is standard attention bit for bit
    return torch.where(n == train_len, torch.ones_like(scale), scale).to(torch.float32)
