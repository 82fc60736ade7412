"""Token + segment (+ learned position) embeddings, normalised, optionally projected to the hidden size.

With ``hierarchical_alpha`` the learned table of n positions is read through the hierarchical
decomposition (《层次分解位置编码，让BERT可以处理超长文本》), reaching n² positions.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from kexue.layers.positions import hierarchical_lookup


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, dim: int, norm: Callable[[], nn.Module], segments: int = 2,
                 positions: int | None = None, hidden_size: int | None = None, dropout: float = 0.0,
                 pad_token_id: int | None = 0, bias: bool = True, hierarchical_alpha: float | None = None,
                 norm_embeddings: bool = True):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.segment = nn.Embedding(segments, dim) if segments else None
        self.position = nn.Embedding(positions, dim) if positions else None
        self.norm = norm() if norm_embeddings else None
        self.hierarchical_alpha = hierarchical_alpha
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(dim, hidden_size, bias=bias) if hidden_size and hidden_size != dim else None

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None, position_ids: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        x = self.token(input_ids)
        if self.segment is not None and segment_ids is not None:
            x = x + self.segment(segment_ids)
        if self.position is not None:
            x = x + self.positions(position_ids)
        if self.norm is not None:
            x = self.norm(x, cond)
        x = self.dropout(x)
        return self.project(x) if self.project is not None else x

    def positions(self, position_ids: Tensor) -> Tensor:
        if self.hierarchical_alpha is None:
            return self.position(position_ids)
        return hierarchical_lookup(self.position.weight, position_ids, self.hierarchical_alpha)

