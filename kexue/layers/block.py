"""One Transformer layer: attention then feed-forward, each wrapped in a residual and a norm.

post-norm (BERT, RoFormer):  x = N(x + Attn(x));   x = N(x + FFN(x))
pre-norm  (GPT-2, T5):       x = x + Attn(N(x));   x = x + FFN(N(x))
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from kexue.layers.attention import KVCache, MultiHeadAttention
from kexue.layers.ffn import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attn: MultiHeadAttention, ffn: FeedForward, norm: Callable[[], nn.Module],
                 pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.attn, self.ffn = attn, ffn
        self.attn_norm, self.ffn_norm = norm(), norm()
        self.pre_norm = pre_norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope=None, bias: Tensor | None = None,
                cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.attn_norm(x, cond), mask, rope, bias, cache=cache))
            return x + self.dropout(self.ffn(self.ffn_norm(x, cond)))
        x = self.attn_norm(x + self.dropout(self.attn(x, mask, rope, bias, cache=cache)), cond)
        return self.ffn_norm(x + self.dropout(self.ffn(x)), cond)
