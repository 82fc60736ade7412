"""Multi-head attention over ``torch.nn.functional.scaled_dot_product_attention``.

    Attention(Q, K, V) = softmax(s · Q Kᵀ + bias, masked) V,   s = 1/√d by default

One module serves self-attention (BERT, RoFormer, GPT), cross-attention (T5 decoder), RoPE
(rotation of q and k before the product) and additive position biases (T5 relative buckets).
The optional entropy-invariant scale multiplies s by log n / log N, n the number of keys a query
sees (《从熵不变性看Attention的Scale操作》, 《熵不变性Softmax的一个快速推导》).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers.positions import RotaryEmbedding, entropy_invariant_scale


class KVCache:
    """Per-layer key/value tensors ``[B, H, L, D]`` for incremental decoding.

    ``update`` appends the new keys/values of a layer and returns everything cached so far;
    ``length`` is the number of cached positions (the offset of the next token);
    ``reorder`` selects batch rows (beam search, n samples); ``static`` holds cross-attention
    keys/values computed once. It holds keys and values only: everything else a request needs
    (segment history, condition vectors, position biases) lives in its decoding state. Storage is preallocated and grows geometrically, so a decoding
    step writes only its new position instead of re-copying the whole history (``torch.cat``).
    """

    def __init__(self):
        self._k: dict[int, Tensor] = {}
        self._v: dict[int, Tensor] = {}
        self._len: dict[int, int] = {}
        self.static: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def length(self) -> int:
        return next(iter(self._len.values())) if self._len else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        n, old = k.shape[2], self._len.get(layer, 0)
        kb = self._k.get(layer)
        if kb is None or old + n > kb.shape[2]:
            cap = max(2 * (old + n), 64)
            kb, vb = k.new_empty(*k.shape[:2], cap, k.shape[3]), v.new_empty(*v.shape[:2], cap, v.shape[3])
            if old:
                kb[:, :, :old], vb[:, :, :old] = self._k[layer][:, :, :old], self._v[layer][:, :, :old]
            self._k[layer], self._v[layer] = kb, vb
        self._k[layer][:, :, old:old + n] = k
        self._v[layer][:, :, old:old + n] = v
        self._len[layer] = old + n
        return self._k[layer][:, :, :old + n], self._v[layer][:, :, :old + n]

    def tensors(self) -> dict[int, tuple[Tensor, Tensor]]:
        """Each layer's cached keys and values ``[B, H, length, D]`` (views of the storage), e.g. for a
        decoding state that merges the rows of several caches (:meth:`PrefixDecoding.merge`)."""
        return {layer: (self._k[layer][:, :, :n], self._v[layer][:, :, :n]) for layer, n in self._len.items()}

    def reorder(self, index: Tensor) -> None:
        for store in (self._k, self._v):
            for layer, t in store.items():
                store[layer] = t.index_select(0, index)
        self.static = {l: (k.index_select(0, index), v.index_select(0, index)) for l, (k, v) in self.static.items()}


class ScaledDotProduct(nn.Module):
    """softmax(scale · q kᵀ + mask) v through SDPA. A module of its own so that forward hooks
    (:func:`kexue.tools.capture`) see the q, k, v and mask a layer really used, RoPE and cache included."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float,
                scale: float) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)


class MultiHeadAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        scale: float | None = None,
        kv_dim: int | None = None,
        entropy_train_len: int | None = None,
        layer_idx: int = 0,
        rotary_value: bool = False,
    ):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or dim // heads
        inner = self.heads * self.head_dim
        kv_dim = kv_dim or dim
        self.q = nn.Linear(dim, inner, bias=bias)
        self.k = nn.Linear(kv_dim, inner, bias=bias)
        self.v = nn.Linear(kv_dim, inner, bias=bias)
        self.o = nn.Linear(inner, dim, bias=bias if out_bias is None else out_bias)
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else scale
        self.entropy_train_len = entropy_train_len
        self.layer_idx = layer_idx
        self.rotary_value = rotary_value  # RoFormer's rotary_value: V is rotated like Q and K
        self.core = ScaledDotProduct()

    def _split(self, x: Tensor) -> Tensor:
        b, l, _ = x.shape
        return x.view(b, l, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        rope: tuple[RotaryEmbedding, Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        context: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x ``[B, L, dim]``; mask bool broadcastable to ``[B, H, L, K]`` (True = attend);
        rope = (rotary, cos, sin) for the query positions; bias = additive ``[.., L, K]`` logits
        bias; context = keys/values source for cross-attention (cached once if ``cache``)."""
        q = self._split(self.q(x))
        if context is not None:
            if cache is not None and self.layer_idx in cache.static:
                k, v = cache.static[self.layer_idx]
            else:
                k, v = self._split(self.k(context)), self._split(self.v(context))
                if cache is not None:
                    cache.static[self.layer_idx] = (k, v)
        else:
            k, v = self._split(self.k(x)), self._split(self.v(x))
            if rope is not None:
                rotary, cos, sin = rope
                q, k = rotary.rotate(q, cos, sin), rotary.rotate(k, cos, sin)
                if self.rotary_value:
                    v = rotary.rotate(v, cos, sin)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)
        if self.entropy_train_len is not None:
            n_keys = mask.sum(-1, keepdim=True) if mask is not None else torch.tensor(float(k.shape[2]))
            q = q * entropy_invariant_scale(n_keys, self.entropy_train_len).to(q.dtype)
        attn_mask = mask
        if bias is not None:
            attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        out = self.core(q, k, v, attn_mask, self.dropout if self.training else 0.0, self.scale)
        return self.o(out.transpose(1, 2).flatten(2))
