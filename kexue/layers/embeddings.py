"""Token + segment (+ learned position) embeddings, normalised, optionally projected to the hidden size."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, dim: int, norm: Callable[[], nn.Module], segments: int = 2,
                 positions: int | None = None, hidden_size: int | None = None, dropout: float = 0.0,
                 pad_token_id: int | None = 0, bias: bool = True):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.segment = nn.Embedding(segments, dim) if segments else None
        self.position = nn.Embedding(positions, dim) if positions else None
        self.norm = norm()
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(dim, hidden_size, bias=bias) if hidden_size and hidden_size != dim else None

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None, position_ids: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        x = self.token(input_ids)
        if self.segment is not None and segment_ids is not None:
            x = x + self.segment(segment_ids)
        if self.position is not None:
            x = x + self.position(position_ids)
        x = self.dropout(self.norm(x, cond))
        return self.project(x) if self.project is not None else x
