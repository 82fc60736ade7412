"""Normalisation layers: LayerNorm with bert4keras's conditional option, and RMSNorm.

Conditional LayerNorm (《基于Conditional Layer Normalization的条件文本生成》): a condition c shifts the
gain and bias, γ(c) = γ + W_γ h(c) and β(c) = β + W_β h(c), with W_γ, W_β zero-initialised so that
the layer starts out as plain LayerNorm; h(c) = act(W_h c) (no bias) when ``cond_hidden`` is set,
else c (bert4keras's ``LayerNormalization(hidden_units=..., hidden_activation=...)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers.ffn import activation


class LayerNorm(nn.Module):
    """y = γ(c) ⊙ (x - μ) / sqrt(σ² + ε) + β(c); ``cond_dim`` enables the conditional form."""

    def __init__(self, dim: int, eps: float = 1e-12, bias: bool = True, cond_dim: int | None = None,
                 cond_hidden: int | None = None, cond_hidden_act: str = "linear"):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.cond_dim = cond_dim
        if cond_dim is not None:
            self.cond_proj = nn.Linear(cond_dim, cond_hidden, bias=False) if cond_hidden else None
            self.cond_act = (lambda t: t) if cond_hidden_act == "linear" else activation(cond_hidden_act)
            width = cond_hidden or cond_dim
            self.cond_gamma = nn.Linear(width, dim, bias=False)
            self.cond_beta = nn.Linear(width, dim, bias=False) if bias else None
            nn.init.zeros_(self.cond_gamma.weight)
            if self.cond_beta is not None:
                nn.init.zeros_(self.cond_beta.weight)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None or self.cond_dim is None:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        if self.cond_proj is not None:
            cond = self.cond_act(self.cond_proj(cond))
        if cond.dim() == x.dim() - 1:  # one condition vector per sequence
            cond = cond.unsqueeze(-2)
        y = F.layer_norm(x, x.shape[-1:], None, None, self.eps)
        y = y * (self.weight + self.cond_gamma(cond))
        if self.bias is not None:
            y = y + self.bias + self.cond_beta(cond)
        return y


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + ε) (⊙ g when ``affine``): T5's norm, and RoFormer-v2's with no gain."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        y = (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)
        return y * self.weight if self.weight is not None else y
