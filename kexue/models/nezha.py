"""NEZHA (Wei et al., arXiv 1909.00204): BERT whose positions are functional relative ones.

No absolute position table: every attention layer adds a fixed sinusoid of the clipped offset j - i to
the keys and to the values (Shaw et al.'s relative positions with a functional table; the "classic"
relative form of 《让研究人员绞尽脑汁的Transformer位置编码》, https://kexue.fm/archives/8130):

    r_ij = T[clip(j - i, -M, M) + M],   T[n] = (sin nθ_0, cos nθ_0, sin nθ_1, cos nθ_1, …),  θ_k = 10000^(-2k/d)
    a_ij = q_i · (k_j + r_ij) / √d,      o_i = Σ_j softmax_j(a_ij) (v_j + r_ij)

with M = ``max_relative_position`` and d the head size; T has 2M + 1 rows, indexed by the shifted
offset (row M is offset 0). bert4keras 0.11.5 computes exactly this with M = 64 whatever its config
says (``RelativePositionEmbedding(input_dim=2 * 64 + 1)``); NEZHA's own code and bert4torch read M
from the config, and so does kexue. The offsets are token-index differences: with a KV cache the new
queries sit after the cached keys; ``position_ids`` add nothing and must be consecutive (left padding
repeats position 0), as every real token's offsets then equal the index differences.

HF layout: bert4torch's and the released NEZHA PyTorch checkpoints' (``bert.*`` / ``cls.*``, BERT's
names without ``position_embeddings``; ``model_type: nezha``, ``max_relative_position``); a
precomputed relative table stored as a buffer is ignored. bert4keras TF names: BERT's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers import FeedForward, KVCache, TransformerBlock
from kexue.layers.positions import entropy_invariant_scale
from kexue.models.base import tracing
from kexue.models.bert import BERT, BERT4KERAS_OPTIONAL
from kexue.models.bert import REFUSED as BERT_REFUSED
from kexue.models.bert import bert4keras_rules
from kexue.models.config import TransformerConfig
from kexue.models.weights import Bert4kerasNames


@dataclass
class NezhaConfig(TransformerConfig):
    """BERT's fields + ``max_relative_position`` (M: offsets are clipped to [-M, M])."""
    max_relative_position: int = 64

    TYPES = {**TransformerConfig.TYPES, "max_relative_position": "pos_int"}


REFUSED = {**BERT_REFUSED,
           "use_relative_position": (True, "NEZHA without its relative positions is not NEZHA (use family bert)"),
           "rotary_value": (False, "NEZHA has no rotary positions (use family roformer)")}

BERT4KERAS_NAMES = Bert4kerasNames(("nezha",), bert4keras_rules, BERT4KERAS_OPTIONAL,
                                   config_marks=("max_relative_position", "use_relative_position"))


def relative_table(max_relative: int, dim: int) -> Tensor:
    """``[2M + 1, dim]``: row n is the sinusoid of n, sin and cos interleaved (NEZHA's and bert4keras's
    ``Sinusoidal`` table)."""
    if dim % 2:
        raise ValueError(f"NEZHA's sinusoid table needs an even head size, got {dim}")
    inv_freq = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) * 2.0 / dim)
    angles = torch.arange(2 * max_relative + 1, dtype=torch.float64)[:, None] * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).float()


class RelativeAttention(nn.Module):
    """Multi-head self-attention with NEZHA's relative positions added to keys and values (module docstring).
    Computed without SDPA (the value term needs the probabilities); fully masked query rows give zeros,
    as SDPA does."""

    def __init__(self, dim: int, heads: int, max_relative: int, dropout: float = 0.0, layer_idx: int = 0,
                 entropy_train_len: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.max_relative, self.dropout, self.layer_idx = max_relative, dropout, layer_idx
        self.scale = self.head_dim ** -0.5
        self.entropy_train_len = entropy_train_len
        self.register_buffer("table", relative_table(max_relative, self.head_dim), persistent=False)

    def _split(self, x: Tensor) -> Tensor:
        b, l, _ = x.shape
        return x.view(b, l, self.heads, self.head_dim).transpose(1, 2)

    def relative(self, n_q: int, n_k: int) -> Tensor:
        """``[n_q, n_k, d]``: r_ij for the last ``n_q`` of ``n_k`` positions (the new queries after a cache)."""
        keys = torch.arange(n_k, device=self.table.device)
        offsets = keys[None, :] - keys[n_k - n_q:, None]
        m = self.max_relative
        return self.table[offsets.clamp(-m, m) + m]

    def forward(self, x: Tensor, mask: Tensor | None = None, relative: Tensor | None = None,
                bias: Tensor | None = None, context: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """``relative``: the ``[n_q, n_k, d]`` r_ij (computed here when not given; the model computes it once
        for all layers and :class:`TransformerBlock` hands it over in its RoPE argument's place)."""
        if bias is not None or context is not None:
            raise ValueError("NEZHA's attention takes no additive bias or cross-attention context")
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        r = (self.relative(q.shape[2], k.shape[2]) if relative is None else relative).to(q.dtype)
        if self.entropy_train_len is not None:
            n_keys = mask.sum(-1, keepdim=True) if mask is not None else torch.tensor(float(k.shape[2]))
            q = q * entropy_invariant_scale(n_keys, self.entropy_train_len).to(q.dtype)
        logits = (q @ k.transpose(-1, -2) + torch.einsum("bhqd,qkd->bhqk", q, r)) * self.scale
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        probs = logits.float().softmax(-1).nan_to_num(0.0).to(v.dtype)  # all-masked rows: zeros
        probs = F.dropout(probs, self.dropout, self.training)
        out = probs @ v + torch.einsum("bhqk,qkd->bhqd", probs, r)
        return self.o(out.transpose(1, 2).flatten(2))


class NEZHA(BERT):
    family = "nezha"
    hf_architectures = ("NezhaModel", "NezhaForMaskedLM")  # bert4torch's layout (prefix bert.)
    learned_positions = False
    config_class = NezhaConfig
    refused = REFUSED
    hf_ignore = (r".*relative_positions.*",)  # a precomputed table some exports store

    @classmethod
    def check_options(cls, options, path=None) -> None:
        super().check_options(options, path)
        if options.hierarchical_alpha is not None:
            options.refuse("hierarchical_alpha", "needs a learned position table; NEZHA's positions are relative",
                           path)

    def hf_config_fields(self) -> dict[str, Any]:
        d = super().hf_config_fields()
        d.pop("rotary_value"), d.pop("rope_base")
        c = self.config  # bert4torch's layout has no projection for embedding_size != hidden_size
        plain = self.options.hf_compatible and c.embedding_size in (None, c.hidden_size)
        d["model_type"] = self.family if plain else f"kexue_{self.family}"
        return d

    def build_layer(self, i: int) -> TransformerBlock:
        c = self.config
        attn = RelativeAttention(c.hidden_size, c.num_attention_heads, c.max_relative_position,
                                 c.attention_probs_dropout_prob, layer_idx=i,
                                 entropy_train_len=self.options.entropy_train_len)
        ffn = FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act)
        return TransformerBlock(attn, ffn, self.norm_factory(c.hidden_size), dropout=c.hidden_dropout_prob)

    def max_positions(self) -> int:
        return 1 << 30  # offsets are clipped: no table bounds the length

    def apply_main_layers(self, x, mask, position_ids, cond, cache, hidden) -> Tensor:
        n_q = x.shape[1]
        relative = self.layers[0].attn.relative(n_q, n_q + (cache.length if cache is not None else 0))
        for layer in self.layers:  # the block passes its third argument on to the attention
            x = self.block(layer, x, mask, relative, cond=cond, cache=cache, cached=cache is not None)
            if hidden is not None:
                hidden.append(x)
        return x

    def check_inputs(self, input_ids, segment_ids, attention_mask, position_ids, cond, past) -> None:
        super().check_inputs(input_ids, segment_ids, attention_mask, position_ids, cond, past)
        if position_ids is None or tracing() or position_ids.shape[-1] < 2:
            return
        p = position_ids if position_ids.dim() == 2 else position_ids[None]
        step = p[:, 1:] - p[:, :-1]
        if not bool(((step == 1) | ((step == 0) & (p[:, :-1] == 0))).all()):
            raise ValueError("position_ids: NEZHA's positions are the offsets j - i of token indices (as bert4keras "
                             "computes them); only consecutive position ids (after left padding) are meaningful")
