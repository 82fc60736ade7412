"""Position-wise feed-forward network: down(act(up(x))), or the gated form down(act(gate(x)) ⊙ up(x))."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gelu_tanh(x: Tensor) -> Tensor:
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (HF ``gelu_new``; bert4keras ``gelu_tanh``), the formula
    written out as HF's ``NewGELUActivation`` and bert4keras compute it (torch's fused
    ``gelu(approximate="tanh")`` rounds differently, and the gap grows with the activations' scale)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_erf": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str):
    """Look up an activation by its HF / bert4keras name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, act: str = "gelu", bias: bool = True, gated: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(dim, inner, bias=bias)
        self.gate = nn.Linear(dim, inner, bias=bias) if gated else None
        self.down = nn.Linear(inner, dim, bias=bias)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))
        return self.down(self.dropout(h))
