"""GAU-α: a RoFormer-v2 whose layers are Gated Attention Units (《FLASH：可能是近来最有意思的高效Transformer设计》,
《GAU-α：尝鲜体验快好省的下一代Attention》; ZhuiyiTechnology's release runs on bert4keras's ``GatedAttentionUnit``).

The GAU fuses attention and the GLU feed-forward into one single-head layer. For X ``[n, d]``, with
φ = ``hidden_act`` (swish), e = ``intermediate_size``, s = ``attention_key_size``, no biases:

    U, V, Z = split(φ(X W_i), [e, e, s])          Q = Z ⊙ γ_q,  K = Z ⊙ γ_k  (then RoPE on Q and K)
    A = softmax(log(max(l, 16)) / log 512 · Q Kᵀ / √s)    l = the number of keys the query sees (softmax_plus)
    GAU(X) = (U ⊙ A V) W_o

softmax_plus is the entropy-invariant scale of 《从熵不变性看Attention的Scale操作》 with a floor of 16 keys
(bert4keras ``attention_normalize(..., 'softmax_plus')``). The model around it is RoFormer-v2's: the
embeddings E[x] + S[s] through the gain-free RMS norm x / sqrt(mean(x²) + ε), every layer
x = RMSNorm(x + GAU(x)), and the MLM head the tied embedding alone (no bias; its own ``lm_head`` matrix
when ``tie_word_embeddings`` is false). The causal and UniLM
masks enter through the mask, and l counts the keys they leave (padding included), as bert4keras does.

Besides the computation this file says what the family record holds: :class:`GAUConfig` (RoFormer's
fields plus ``attention_key_size``), its ``config.json`` rules, the HF-layout names (those of the
community PyTorch port, ``GAUAlphaForMaskedLM``, written as ``model_type: kexue_gau_alpha``) and the
bert4keras TF names (``GAU_alpha/encoder/layer_<i>/gau/...``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers import KVCache, RMSNorm, RotaryEmbedding
from kexue.layers.embeddings import Embeddings
from kexue.layers.ffn import activation
from kexue.models.base import Transformer, TransformerOutput
from kexue.models.bert import FOREIGN
from kexue.models.config import TRANSFORMER_REFUSED, ConfigError, TransformerConfig, check_refused, refuse
from kexue.models.weights import Rule, WeightMap

SOFTMAX_PLUS_BASE = 512  # log n / log 512: the training length the scale is 1 at
SOFTMAX_PLUS_FLOOR = 16  # bert4keras: "极短序列scale反而不好", l = max(l, 16)

RULES = [
    Rule(r"embeddings\.token\.weight", "embeddings.word_embeddings.weight"),
    Rule(r"embeddings\.segment\.weight", "embeddings.token_type_embeddings.weight"),
    Rule(r"layers\.(\d+)\.gau\.i_dense\.weight", r"encoder.layer.\1.gau.i_dense.weight"),
    Rule(r"layers\.(\d+)\.gau\.o_dense\.weight", r"encoder.layer.\1.gau.o_dense.weight"),
    Rule(r"layers\.(\d+)\.gau\.q_scale", r"encoder.layer.\1.gau.q_scaleoffset.weight"),
    Rule(r"layers\.(\d+)\.gau\.k_scale", r"encoder.layer.\1.gau.k_scaleoffset.weight"),
    Rule(r"lm_head\.weight", "cls.predictions.decoder.weight"),  # untied heads only
]
HEAD, EMBEDDING = "cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"
REFUSED = {**{k: v for k, v in TRANSFORMER_REFUSED.items() if k != "position_embedding_type"},
           "use_bias": (False, "GAU-α's GAU has no biases"),
           "normalization": ("softmax_plus", "GAU-α normalises attention with softmax_plus"),
           "attention_scale": (True, "GAU-α divides the logits by √s"),
           "rotary_value": (False, "GAU-α rotates queries and keys only")}


@dataclass
class GAUConfig(TransformerConfig):
    """RoFormer-v2's hyper-parameters plus ``attention_key_size`` s (None: hidden_size / num_attention_heads,
    bert4keras's default); ``intermediate_size`` is e, the width of U and V."""
    attention_key_size: int | None = None

    TYPES = {**TransformerConfig.TYPES, "attention_key_size": "opt_int"}

    @property
    def key_size(self) -> int:
        return self.attention_key_size or self.hidden_size // self.num_attention_heads

    def validate(self, path=None) -> None:
        super().validate(path)
        if self.key_size % 2 or self.key_size <= 0:
            raise ConfigError(f"config.attention_key_size{' in ' + str(path) if path else ''} must be a positive "
                              f"even number (RoPE rotates pairs), got {self.key_size}")


def bert4keras_rules(model: str = "gau_alpha") -> list[tuple[str, str]]:
    """kexue GAU-α names -> the TF names of the GAU-α release (read by bert4keras)."""
    layer = "GAU_alpha/encoder/layer_{0}/gau"
    return [(r"embeddings\.token\.weight", "bert/embeddings/word_embeddings"),
            (r"embeddings\.segment\.weight", "bert/embeddings/token_type_embeddings"),
            (r"layers\.(\d+)\.gau\.i_dense\.weight", f"{layer}/i_dense/kernel"),
            (r"layers\.(\d+)\.gau\.o_dense\.weight", f"{layer}/o_dense/kernel"),
            (r"layers\.(\d+)\.gau\.q_scale", f"{layer}/q_scaleoffset/gamma"),
            (r"layers\.(\d+)\.gau\.k_scale", f"{layer}/k_scaleoffset/gamma")]


def softmax_plus(logits: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(log(max(l, 16)) / log 512 · a) over the keys a query sees (``mask`` True), 0 elsewhere;
    l = the number of those keys. A query that sees no key gets all zeros."""
    if mask is None:
        n = torch.tensor(float(logits.shape[-1]), device=logits.device)
    else:
        n = mask.sum(-1, keepdim=True).to(logits.dtype)
    a = logits * torch.log(n.clamp(min=SOFTMAX_PLUS_FLOOR)) / math.log(SOFTMAX_PLUS_BASE)
    if mask is None:
        return torch.softmax(a, -1)
    return torch.softmax(a.masked_fill(~mask, float("-inf")), -1).masked_fill(~mask, 0.0)


class GatedAttentionUnit(nn.Module):
    """GAU(X) = (U ⊙ A V) W_o, single head, key size s, no bias (see the module docstring)."""

    def __init__(self, dim: int, units: int, key_size: int, act: str = "swish", dropout: float = 0.0,
                 layer_idx: int = 0):
        super().__init__()
        self.units, self.key_size, self.layer_idx = units, key_size, layer_idx
        self.i_dense = nn.Linear(dim, 2 * units + key_size, bias=False)
        self.o_dense = nn.Linear(units, dim, bias=False)
        self.q_scale = nn.Parameter(torch.ones(key_size))
        self.k_scale = nn.Parameter(torch.ones(key_size))
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope=None, cache: KVCache | None = None) -> Tensor:
        """x ``[B, L, d]``; mask bool broadcastable to ``[B, 1, L, K]`` (True = the query sees the key);
        rope = (rotary, cos, sin) of the query positions; cache: keys and values of earlier positions."""
        u, v, z = self.act(self.i_dense(x)).split([self.units, self.units, self.key_size], -1)
        q, k, v = (z * self.q_scale)[:, None], (z * self.k_scale)[:, None], v[:, None]  # one head: [B, 1, L, .]
        if rope is not None:
            rotary, cos, sin = rope
            q, k = rotary.rotate(q, cos, sin), rotary.rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        a = torch.matmul(q, k.transpose(-1, -2)) / self.key_size ** 0.5
        if mask is not None:
            mask = mask.expand(a.shape)
        weights = self.dropout(softmax_plus(a, mask))
        return self.o_dense(u * torch.matmul(weights, v)[:, 0])


class GAULayer(nn.Module):
    """x = RMSNorm(x + GAU(x)), the gain-free RMS norm of RoFormer-v2."""

    def __init__(self, gau: GatedAttentionUnit, norm: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.gau, self.norm = gau, norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope=None, cond=None, cache=None) -> Tensor:
        return self.norm(x + self.dropout(self.gau(x, mask, rope, cache)))


class GAUAlpha(Transformer):
    family = "gau_alpha"
    hf_prefix = "gau_alpha."
    hf_architectures = ("GAUAlphaModel", "GAUAlphaForMaskedLM")
    option_keys = ("with_mlm",)
    conditional_norm = False  # gain-free RMS norms: nothing for Conditional LayerNorm to condition

    @classmethod
    def uses_rope(cls, options) -> bool:
        return True

    # -- config.json -------------------------------------------------------------------------------
    @classmethod
    def parse_config(cls, d: dict[str, Any], path: str | Path | None = None) -> GAUConfig:
        """A GAU-α ``config.json`` dict (BERT's names plus ``attention_key_size``) -> :class:`GAUConfig`,
        refusing what GAU-α does not compute (errors name the field and ``path``)."""
        d = {k: v for k, v in d.items() if k != "kexue"}
        check_refused(d, REFUSED, path)
        for name in FOREIGN:
            if name in d:
                refuse(name, d[name], f"a GPT-2 / T5 field in a {cls.family} config (wrong model_type?)", path)
        if d.get("embedding_size") not in (None, d.get("hidden_size")):
            refuse("embedding_size", d["embedding_size"], "GAU-α's embeddings have the hidden size", path)
        d.pop("embedding_size", None)
        if "num_attention_heads" not in d and d.get("attention_key_size"):  # single-head: heads only set s's default
            d["num_attention_heads"] = 1
        return GAUConfig.from_dict({**d, "model_type": cls.family}, path)

    def hf_config_fields(self) -> dict[str, Any]:
        d = self.config.to_dict()
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "rotary_value"):
            d.pop(name)
        d.update(attention_key_size=self.config.key_size, use_bias=False, normalization="softmax_plus",
                 attention_scale=True, model_type=f"kexue_{self.family}")  # transformers has no GAU-α
        return d

    # -- construction ------------------------------------------------------------------------------
    def build(self) -> None:
        c = self.config
        d, eps = c.hidden_size, c.layer_norm_eps
        norm = lambda: RMSNorm(d, eps, affine=False)  # noqa: E731
        self.embeddings = Embeddings(c.vocab_size, d, norm, c.type_vocab_size, None, d, c.hidden_dropout_prob,
                                     c.pad_token_id, bias=False)
        self.layers = nn.ModuleList(
            GAULayer(GatedAttentionUnit(d, c.intermediate_size, c.key_size, c.hidden_act,
                                        c.attention_probs_dropout_prob, i), norm(), c.hidden_dropout_prob)
            for i in range(c.num_hidden_layers))
        self.rotary = RotaryEmbedding(c.key_size, c.rope_base, interleaved=True)
        untied = self.with_mlm and not c.tie_word_embeddings
        self.lm_head = nn.Linear(d, c.vocab_size, bias=False) if untied else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def max_positions(self) -> int:
        return 1 << 30  # RoPE: no table bounds the length

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        if segment_ids is None and self.embeddings.segment is not None:
            segment_ids = torch.zeros_like(input_ids)
        return self.embeddings(input_ids, segment_ids)

    def layer_extras(self, position_ids: Tensor) -> dict:
        cos, sin = self.rotary(position_ids)
        return {"rope": (self.rotary, cos, sin)}

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        logits = None
        if self.with_mlm:
            h = x if logits_mask is None else x[logits_mask]
            logits = F.linear(h, self.embeddings.token.weight) if self.lm_head is None else self.lm_head(h)
        return TransformerOutput(hidden=x, logits=logits)

    hf_head = (HEAD, EMBEDDING)

    def head_tied(self) -> bool | None:
        """Whether the MLM head reads the token embedding (None: no head)."""
        return None if not self.with_mlm else self.lm_head is None

    def untie_head(self) -> None:
        self.lm_head = nn.Linear(self.config.hidden_size, self.config.vocab_size, bias=False)
        self.lm_head.weight = nn.Parameter(self.embeddings.token.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def weight_map(self) -> WeightMap:
        """``GAUAlphaForMaskedLM`` names (prefix ``gau_alpha.``; the MLM head is the tied embedding)."""
        return WeightMap(self, RULES, prefix=self.hf_prefix, head=(r"cls\.",), use_prefix=self.with_mlm,
                         optional=(r"cls\..*",) if not self.with_mlm else (),
                         must_equal={HEAD: EMBEDDING} if self.lm_head is None else {})


__all__ = ["GAUAlpha", "GAUConfig", "GAULayer", "GatedAttentionUnit", "REFUSED", "RULES", "bert4keras_rules",
           "softmax_plus"]
