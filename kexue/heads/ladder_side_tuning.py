r"""Ladder Side-Tuning — "Ladder Side-Tuning:预训练模型的“过墙梯”".

A frozen backbone produces hidden states :math:`h_0` (embeddings), :math:`h_1, \dots, h_L` under
``torch.no_grad()``; a thin side network of width :math:`d \ll D` climbs beside it like a ladder:

.. math::
    s_0 = W_0 h_0,\qquad
    s_i = \mathrm{Block}_i\big(\mu_i\, W_i h_i + (1-\mu_i)\, s_{i-1}\big),\quad \mu_i = \sigma(\alpha_i)

Only :math:`W_i`, :math:`\alpha_i` and the small blocks are trained. No gradient flows into the
backbone, so no backbone activation is kept for backward (the memory win over full fine-tuning
and over adapters / LoRA, which still backpropagate through the whole backbone), and the
backward pass costs only the side network.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from kexue.layers import FeedForward, LayerNorm, MultiHeadAttention, TransformerBlock
from kexue.layers.masks import padding_mask


def transformer_hidden_states(backbone: nn.Module, input_ids: Tensor, **inputs) -> list[Tensor]:
    """Per-layer hidden states of a kexue :class:`~kexue.models.base.Transformer`."""
    return backbone(input_ids, output_hidden_states=True, **inputs).all_hidden


class LadderSideNetwork(nn.Module):
    """Side network over a frozen ``backbone``. ``hidden_states(backbone, input_ids, **inputs)``
    returns the list of ``[B, L, D]`` states (default: kexue Transformers' ``all_hidden``);
    ``every`` uses every k-th backbone layer (the side net has ``L // every`` blocks).
    ``forward`` returns the side network's last ``[B, L, side_dim]`` states; put a task head on them."""

    def __init__(self, backbone: nn.Module, hidden_size: int, num_layers: int, side_dim: int = 64,
                 heads: int = 4, every: int = 1, dropout: float = 0.1,
                 hidden_states: Callable[..., list[Tensor]] = transformer_hidden_states):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.hidden_states, self.every = hidden_states, every
        self.taps = list(range(every, num_layers + 1, every))  # which backbone layers feed the side
        self.down = nn.ModuleList(nn.Linear(hidden_size, side_dim) for _ in range(len(self.taps) + 1))
        self.gates = nn.Parameter(torch.zeros(len(self.taps)))  # mu = sigmoid(0) = 1/2 at the start
        self.blocks = nn.ModuleList(
            TransformerBlock(MultiHeadAttention(side_dim, heads, dropout=dropout),
                             FeedForward(side_dim, 4 * side_dim, dropout=dropout),
                             lambda: LayerNorm(side_dim), pre_norm=True, dropout=dropout)
            for _ in self.taps)
        self.norm = LayerNorm(side_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout in the backbone either
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **inputs) -> Tensor:
        with torch.no_grad():  # no graph through the backbone at all
            hs = self.hidden_states(self.backbone, input_ids, attention_mask=attention_mask, **inputs)
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        s = self.down[0](hs[0])
        for i, (tap, block) in enumerate(zip(self.taps, self.blocks)):
            mu = torch.sigmoid(self.gates[i])
            s = block(mu * self.down[i + 1](hs[tap]) + (1 - mu) * s, mask)
        return self.norm(s)
