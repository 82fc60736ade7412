"""GPT2-ML (imcaspar/gpt2-ml, the 1.5B-parameter Chinese GPT-2 that bert4keras loads as ``gpt2_ml``).

Despite its name its layout is closer to GPT-1 with norms moved around. With N = LayerNorm (ε = 1e-5):

    h_0 = N(E[x] + P[t])
    layer:  x = x + Attn(x);   x = N₁(x + FFN(N₀(x)))
    p(x_t | x_<t) = softmax(h_L Eᵀ)_t             (head tied to the token embedding, no bias; an untied
                                                   ``lm_head`` when ``tie_word_embeddings`` is false)

No segment embeddings, no final norm (the last layer ends with N₁), the causal mask of a language model
(《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》). Every norm may be a Conditional LayerNorm
(《基于Conditional Layer Normalization的条件文本生成》), as bert4keras builds it with ``layer_norm_cond``.

Besides the computation this file says what the family record holds: the config rules (BERT's
``config.json`` names, refusing ``REFUSED``), the HF-layout weight names (kexue's own layout,
``model_type: kexue_gpt2_ml``: the original ``newslm`` names with dots) and the bert4keras TF names
(``newslm/...``, :func:`bert4keras_rules`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers import FeedForward, LayerNorm, MultiHeadAttention
from kexue.layers.embeddings import Embeddings
from kexue.models.base import Transformer, TransformerOutput
from kexue.models.bert import FOREIGN
from kexue.models.config import TRANSFORMER_REFUSED, TransformerConfig, check_refused, refuse
from kexue.models.weights import Rule, WeightMap

_NORM = r"(weight|bias|cond_\w+\.weight)"
RULES = [
    Rule(r"embeddings\.token\.weight", "embeddings.word_embed.weight"),
    Rule(r"embeddings\.position\.weight", "embeddings.pos_embed.weight"),
    Rule(rf"embeddings\.norm\.{_NORM}", r"embeddings.LayerNorm_embed_norm.\1"),
    Rule(r"layers\.(\d+)\.attn\.q\.(weight|bias)", r"layer.\1.query_layer.\2"),
    Rule(r"layers\.(\d+)\.attn\.k\.(weight|bias)", r"layer.\1.key_layer.\2"),
    Rule(r"layers\.(\d+)\.attn\.v\.(weight|bias)", r"layer.\1.value_layer.\2"),
    Rule(r"layers\.(\d+)\.attn\.o\.(weight|bias)", r"layer.\1.context_projection_layer.\2"),
    Rule(rf"layers\.(\d+)\.ffn_norm\.{_NORM}", r"layer.\1.LayerNorm_mlp_ln0.\2"),
    Rule(r"layers\.(\d+)\.ffn\.up\.(weight|bias)", r"layer.\1.intermediate.\2"),
    Rule(r"layers\.(\d+)\.ffn\.down\.(weight|bias)", r"layer.\1.output.\2"),
    Rule(rf"layers\.(\d+)\.out_norm\.{_NORM}", r"layer.\1.LayerNorm_mlp_ln1.\2"),
    Rule(r"lm_head\.weight", "lm_head.weight"),  # untied heads only (bert4keras ties it)
]
HEAD, EMBEDDING = "lm_head.weight", "embeddings.word_embed.weight"
REFUSED = {**TRANSFORMER_REFUSED,
           "type_vocab_size": (0, "GPT2-ML has no segment embeddings"),
           "rotary_value": (False, "GPT2-ML has learned positions, no RoPE")}
_TF_NORM = [("weight", "gamma"), ("bias", "beta"), ("cond_gamma.weight", "gamma_dense/kernel"),
            ("cond_beta.weight", "beta_dense/kernel"), ("cond_proj.weight", "hidden_dense/kernel")]


def bert4keras_rules(model: str = "gpt2_ml") -> list[tuple[str, str]]:
    """kexue GPT2-ML names -> the TF names bert4keras's ``GPT2_ML`` reads and writes (``newslm/...``)."""
    rules = [(r"embeddings\.token\.weight", "newslm/embeddings/word_embed"),
             (r"embeddings\.position\.weight", "newslm/embeddings/pos_embed")]
    norms = [(r"embeddings\.norm", "newslm/embeddings/LayerNorm_embed_norm"),
             (r"layers\.(\d+)\.ffn_norm", "newslm/layer{0:02d}/LayerNorm_mlp_ln0"),
             (r"layers\.(\d+)\.out_norm", "newslm/layer{0:02d}/LayerNorm_mlp_ln1")]
    for ours, theirs in norms:
        rules += [(rf"{ours}\.{re.escape(a)}", f"{theirs}/{b}") for a, b in _TF_NORM]
    for ours, theirs in (("attn.q", "query_layer"), ("attn.k", "key_layer"), ("attn.v", "value_layer"),
                         ("attn.o", "context_projection_layer"), ("ffn.up", "intermediate"), ("ffn.down", "output")):
        for part, tf in (("weight", "kernel"), ("bias", "bias")):
            rules.append((rf"layers\.(\d+)\.{re.escape(ours)}\.{part}", f"newslm/layer{{0:02d}}/{theirs}/{tf}"))
    return rules


class GPT2MLBlock(nn.Module):
    """x = x + Attn(x);  x = N₁(x + FFN(N₀(x)))  (bert4keras ``GPT2_ML.apply_main_layers``)."""

    def __init__(self, attn: MultiHeadAttention, ffn: FeedForward, norm, dropout: float = 0.0):
        super().__init__()
        self.attn, self.ffn = attn, ffn
        self.ffn_norm, self.out_norm = norm(), norm()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, cond: Tensor | None = None, cache=None) -> Tensor:
        x = x + self.dropout(self.attn(x, mask, cache=cache))
        return self.out_norm(x + self.dropout(self.ffn(self.ffn_norm(x, cond))), cond)


class GPT2ML(Transformer):
    family = "gpt2_ml"
    hf_architectures = ("GPT2MLModel", "GPT2MLLMHeadModel")  # kexue-only layout
    default_application = "lm"
    applications = ("lm",)
    option_keys = ("with_mlm", "cond_dim", "cond_hidden", "cond_hidden_act", "hierarchical_alpha",
                   "entropy_train_len")

    # -- config.json -------------------------------------------------------------------------------
    @classmethod
    def parse_config(cls, d: dict[str, Any], path: str | Path | None = None) -> TransformerConfig:
        """A ``config.json`` dict under BERT's names -> :class:`TransformerConfig` (no segments, tied head,
        learned positions); a field GPT2-ML does not compute is refused by name."""
        d = {k: v for k, v in d.items() if k != "kexue"}
        d.setdefault("type_vocab_size", 0)
        check_refused(d, REFUSED, path)
        for name in FOREIGN + ("embedding_size",):
            if d.get(name) is not None and not (name == "embedding_size" and d[name] == d.get("hidden_size")):
                refuse(name, d[name], "not a GPT2-ML field (the token embedding is the hidden size)", path)
        d.pop("embedding_size", None)
        return TransformerConfig.from_dict({**d, "model_type": cls.family}, path)

    def hf_config_fields(self) -> dict[str, Any]:
        d = self.config.to_dict()
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "rotary_value", "rope_base"):
            d.pop(name)
        d["model_type"] = f"kexue_{self.family}"  # transformers has no GPT2-ML
        return d

    # -- construction ------------------------------------------------------------------------------
    def build(self) -> None:
        c, o = self.config, self.options
        d = c.hidden_size
        norm = lambda: LayerNorm(d, c.layer_norm_eps, **self.norm_kwargs())  # noqa: E731
        self.embeddings = Embeddings(c.vocab_size, d, norm, 0, c.max_position_embeddings, d, c.hidden_dropout_prob,
                                     c.pad_token_id, hierarchical_alpha=o.hierarchical_alpha)
        self.layers = nn.ModuleList(
            GPT2MLBlock(MultiHeadAttention(d, c.num_attention_heads, dropout=c.attention_probs_dropout_prob,
                                           layer_idx=i, entropy_train_len=o.entropy_train_len),
                        FeedForward(d, c.intermediate_size, c.hidden_act), norm, c.hidden_dropout_prob)
            for i in range(c.num_hidden_layers))
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(d, c.vocab_size, bias=False)
        for name, module in self.named_modules():  # N(0, 0.02), zero biases; conditional-LN projections stay zero
            if isinstance(module, (nn.Linear, nn.Embedding)) and ".cond_" not in name:
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    def max_positions(self) -> int:
        n = self.config.max_position_embeddings
        return n * n if self.options.hierarchical_alpha is not None else n

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        return self.embeddings(input_ids, None, position_ids, cond)

    def apply_main_layers(self, x, mask, position_ids, cond, cache, hidden) -> Tensor:
        for layer in self.layers:
            x = self.block(layer, x, mask, cond=cond, cache=cache, cached=cache is not None)
            if hidden is not None:
                hidden.append(x)
        return x

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        h = x if logits_mask is None else x[logits_mask]
        logits = F.linear(h, self.embeddings.token.weight) if self.lm_head is None else self.lm_head(h)
        return TransformerOutput(hidden=x, logits=logits)

    hf_head = (HEAD, EMBEDDING)

    def head_tied(self) -> bool:
        return self.lm_head is None

    def untie_head(self) -> None:
        self.lm_head = nn.Linear(self.config.hidden_size, self.config.vocab_size, bias=False)
        self.lm_head.weight = nn.Parameter(self.embeddings.token.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def weight_map(self) -> WeightMap:
        return WeightMap(self, RULES, must_equal={HEAD: EMBEDDING} if self.lm_head is None else {})


__all__ = ["GPT2ML", "GPT2MLBlock", "REFUSED", "RULES", "bert4keras_rules"]
