"""GPT-style causal language model (GPT-2 layout; learned positions or RoPE).

    p(x_t | x_<t) = softmax(W · N_f(Block_L(…Block_1(E[x] + P[t] (+ E[s]))…)))_t,   Block: x += Attn(N(x)); x += FFN(N(x))

A pre-norm decoder with a final norm and the LM head tied to the token embedding
(《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》: a language model is the Transformer with the
lower-triangular mask). For multi-turn dialogue (DialoGPT / CDial-GPT style) concatenate the turns
with a separator, give speakers different ``segment_ids`` and compute the loss on the replies only
(:func:`kexue.losses.seq2seq.seq2seq_loss` with a loss mask).

* ``segment_ids``: as in HF GPT-2, token types are looked up in the token embedding and added
  (``type_vocab_size > 0`` gives them their own table instead, as bert4keras's GPT);
* GPT-2's attention scale options ``scale_attn_weights`` / ``scale_attn_by_inverse_layer_idx``;
* an untied ``lm_head`` (``tie_word_embeddings: false`` or a checkpoint storing a different one);
* options (config.json's kexue block): ``rope`` (RoPE instead of learned positions), ``pre_norm`` /
  ``final_norm`` (both false: bert4keras's ``gpt``, the GPT-1 / CDial-GPT post-norm layout whose
  embeddings are summed without a norm), hierarchical positions, conditional LayerNorm, the
  entropy-invariant scale, ``rope_tie`` (with ``rope``: position ids may be [B, L, 2] / [B, L, 3],
  RoPE-Tie, :mod:`kexue.layers.rope_tie`).

GPT-2 checkpoints store ``Conv1D`` weights ``[in, out]`` and a fused ``c_attn``; the weight map
splits / fuses and transposes them in both directions. ``config.json`` is read under GPT-2's names
(or BERT's) by :meth:`GPT.parse_config`; bert4keras's ``gpt`` checkpoints use BERT's TF names under
``gpt/transformer`` (:func:`bert4keras_rules`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers import FeedForward, LayerNorm, MultiHeadAttention, TransformerBlock
from kexue.layers.positions import hierarchical_lookup
from kexue.layers.rope_tie import rotary_for
from kexue.models.base import Transformer, TransformerOutput
from kexue.models.bert import bert4keras_rules as _bert_tf_rules
from kexue.models.config import (ACTIVATION_NAMES, TRANSFORMER_REFUSED, Options, TransformerConfig, check_refused,
                                 check_type, gpt2_to_ours, ours_to_gpt2, refuse)
from kexue.models.weights import Rule, WeightMap

_NORM = r"(weight|bias|cond_\w+\.weight)"
GPT2_RULES = [
    Rule(r"token\.weight", "wte.weight"),
    Rule(r"position\.weight", "wpe.weight"),
    Rule(r"segment\.weight", "wtt.weight"),  # kexue: a separate token-type table (type_vocab_size > 0)
    Rule(rf"final_norm\.{_NORM}", r"ln_f.\1"),
    Rule(rf"layers\.(\d+)\.attn_norm\.{_NORM}", r"h.\1.ln_1.\2"),
    Rule(rf"layers\.(\d+)\.ffn_norm\.{_NORM}", r"h.\1.ln_2.\2"),
    Rule(r"layers\.(\d+)\.attn\.([qkv])\.(weight|bias)", r"h.\1.attn.c_attn.\3", "qkv"),
    Rule(r"layers\.(\d+)\.attn\.o\.(weight|bias)", r"h.\1.attn.c_proj.\2", "conv1d"),
    Rule(r"layers\.(\d+)\.ffn\.up\.(weight|bias)", r"h.\1.mlp.c_fc.\2", "conv1d"),
    Rule(r"layers\.(\d+)\.ffn\.down\.(weight|bias)", r"h.\1.mlp.c_proj.\2", "conv1d"),
    Rule(r"lm_head\.weight", "lm_head.weight"),  # untied heads only
]
HEAD, EMBEDDING = "lm_head.weight", "wte.weight"
REFUSED = {k: v for k, v in TRANSFORMER_REFUSED.items() if k != "position_embedding_type"}
GPT2_TYPES = {"n_embd": "pos_int", "n_layer": "pos_int", "n_head": "pos_int", "n_inner": "opt_int",
              "n_positions": "pos_int", "activation_function": "str", "layer_norm_epsilon": "float",
              "resid_pdrop": "float", "attn_pdrop": "float", "embd_pdrop": "float"}


def bert4keras_rules(model: str = "gpt") -> list[tuple[str, str]]:
    """bert4keras's ``gpt``: the BERT layer names under ``gpt/transformer``."""
    return _bert_tf_rules(model, "gpt", "transformer")


class GPT(Transformer):
    family = "gpt"
    hf_prefix = "transformer."
    hf_architectures = ("GPT2LMHeadModel", "GPT2LMHeadModel")
    default_application = "lm"
    applications = ("lm",)
    option_keys = Transformer.option_keys + ("rope", "pre_norm", "final_norm")
    embedding_modules = ("token", "position", "segment")

    @classmethod
    def uses_rope(cls, options: Options) -> bool:
        return options.rope

    @property
    def rope(self) -> bool:
        return self.options.rope

    # -- config.json -------------------------------------------------------------------------------
    @classmethod
    def parse_config(cls, d: dict[str, Any], path: str | Path | None = None) -> TransformerConfig:
        """An HF ``GPT2Config`` dict (``n_embd``, ``n_layer``, ...; BERT's names are accepted too) ->
        :class:`TransformerConfig`, refusing what GPT does not compute (errors name GPT-2's fields)."""
        d = {k: v for k, v in d.items() if k != "kexue"}
        check_refused(d, REFUSED, path)
        for name in ("embedding_size", "rotary_value"):
            if d.get(name):
                refuse(name, d[name], "not a GPT field", path)
        if "n_embd" in d or d.get("model_type") == "gpt2":  # GPT-2 names; BERT names are accepted too
            for name, kind in GPT2_TYPES.items():  # errors name GPT-2's fields, not their translation
                if name in d:
                    check_type(name, d[name], kind, path)
            if d.get("activation_function", "gelu_new") not in ACTIVATION_NAMES:
                refuse("activation_function", d["activation_function"], f"known: {list(ACTIVATION_NAMES)}", path)
            d = gpt2_to_ours(d)
        d.setdefault("type_vocab_size", 0)
        return TransformerConfig.from_dict({**d, "model_type": "gpt"}, path)

    def hf_config_fields(self) -> dict[str, Any]:
        """GPT-2's ``config.json`` fields (``model_type`` kexue_gpt when transformers cannot compute it)."""
        d = self.config.to_dict()
        d.setdefault("embd_pdrop", self.config.hidden_dropout_prob)  # the dropout build() used (else 0.1 on reading)
        if not self.options.rope:
            d.pop("rope_base")
        compatible = self.options.hf_compatible and not self.config.type_vocab_size
        d["model_type"] = "gpt2" if compatible else "kexue_gpt"
        return ours_to_gpt2(d)

    def build(self) -> None:
        c, o = self.config, self.options
        d = c.hidden_size
        self.token = nn.Embedding(c.vocab_size, d)
        self.position = None if o.rope else nn.Embedding(c.max_position_embeddings, d)
        self.segment = nn.Embedding(c.type_vocab_size, d) if c.type_vocab_size else None
        self.dropout = nn.Dropout(c.extra.get("embd_pdrop", c.hidden_dropout_prob))
        norm = lambda: LayerNorm(d, c.layer_norm_eps, **self.norm_kwargs())  # noqa: E731
        self.layers = nn.ModuleList(
            TransformerBlock(
                MultiHeadAttention(d, c.num_attention_heads, dropout=c.attention_probs_dropout_prob, layer_idx=i,
                                   scale=self.attention_scale(i), entropy_train_len=o.entropy_train_len),
                FeedForward(d, c.intermediate_size, c.hidden_act),
                norm, pre_norm=o.pre_norm, dropout=c.hidden_dropout_prob,
            )
            for i in range(c.num_hidden_layers)
        )
        self.final_norm = norm() if o.final_norm else None
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(d, c.vocab_size, bias=False)
        # rope_tie: position ids may also be [B, L, 2] / [B, L, 3] (RoPE-Tie; text-only stays RoPE-1D)
        self.rotary = rotary_for(c.head_dim, c.rope_base, False, o.rope_tie) if o.rope else None
        for module in self.modules():  # GPT-2's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():  # conditional-LN projections start at zero
            if ".cond_gamma." in name or ".cond_beta." in name:
                nn.init.zeros_(p)

    def attention_scale(self, i: int) -> float:
        """GPT-2: 1/√d unless ``scale_attn_weights`` is false, divided by i + 1 with
        ``scale_attn_by_inverse_layer_idx``."""
        c = self.config
        scale = 1 / math.sqrt(c.head_dim) if c.scale_attn_weights else 1.0
        return scale / (i + 1) if c.scale_attn_by_inverse_layer_idx else scale

    def max_positions(self) -> int:
        n = self.config.max_position_embeddings
        if self.rope:
            return 1 << 30
        return n * n if self.options.hierarchical_alpha is not None else n

    def segment_vocab_size(self) -> int:
        return self.config.type_vocab_size or self.config.vocab_size

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        x = self.token(input_ids)
        if self.position is not None:
            a = self.options.hierarchical_alpha
            x = x + (self.position(position_ids) if a is None else hierarchical_lookup(self.position.weight,
                                                                                        position_ids, a))
        if segment_ids is not None:  # HF GPT-2 adds wte(token_type_ids) whenever they are given
            x = x + (self.segment if self.segment is not None else self.token)(segment_ids)
        return self.dropout(x)

    def layer_extras(self, position_ids: Tensor) -> dict:
        if self.rotary is None:
            return {}
        cos, sin = self.rotary(position_ids)
        return {"rope": (self.rotary, cos, sin)}

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        if self.final_norm is not None:
            x = self.final_norm(x, cond)
        h = x if logits_mask is None else x[logits_mask]  # [N, hidden]: only the positions a loss reads
        # an untied head is called as a module, so a transformed one (kexue.tools.quantize) runs its own kernel
        logits = F.linear(h, self.token.weight) if self.lm_head is None else self.lm_head(h)
        return TransformerOutput(hidden=x, logits=logits)

    hf_head = (HEAD, EMBEDDING)

    def head_tied(self) -> bool:
        return self.lm_head is None

    def untie_head(self) -> None:
        self.lm_head = nn.Linear(self.config.hidden_size, self.config.vocab_size, bias=False)
        self.lm_head.weight = nn.Parameter(self.token.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def weight_map(self) -> WeightMap:
        """``GPT2LMHeadModel`` layout (prefix ``transformer.``, ``lm_head`` outside it)."""
        return WeightMap(self, GPT2_RULES, prefix=self.hf_prefix, head=(r"lm_head\.",), use_prefix=True,
                         ignore=(r"h\.\d+\.attn\.(masked_)?bias",),
                         must_equal={HEAD: EMBEDDING} if self.lm_head is None else {})


def gpt2_config(hf: dict) -> TransformerConfig:
    """HF ``GPT2Config`` fields (n_embd, n_layer, n_head, n_inner, n_positions, ...) -> ours."""
    return GPT.parse_config(dict(hf, model_type="gpt2"))


__all__ = ["GPT", "GPT2_RULES", "bert4keras_rules", "gpt2_config", "gpt2_to_ours"]
