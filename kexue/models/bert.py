"""BERT, RoFormer (v1) and RoFormer-v2: post-norm encoders that differ only in position handling,
biases and the norm.

* BERT: learned absolute positions added to the embeddings.
* RoFormer (《Transformer升级之路：2、博采众长的旋转式位置编码》): no absolute positions; RoPE rotates
  q and k in every layer, so attention logits depend on relative position only.
* RoFormer-v2 (《RoFormerV2：自然语言理解的极限探索》): no biases anywhere, and every norm is the
  scale-free RMS form x / sqrt(mean(x²) + ε) with no gain; the MLM head is the tied embedding alone.

Besides the computation this file says what the family record (:mod:`kexue.models.family`) holds:
how an HF ``config.json`` is read (:meth:`BERT.parse_config`, refusing ``REFUSED``) and written
(:meth:`BERT.hf_config_fields`), the HF weight names (:meth:`BERT.weight_map`) and the bert4keras TF
names (:func:`bert4keras_rules`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers import FeedForward, LayerNorm, MultiHeadAttention, RMSNorm, TransformerBlock
from kexue.layers.embeddings import Embeddings
from kexue.layers.ffn import activation
from kexue.layers.positions import sinusoidal
from kexue.layers.rope_tie import rotary_for
from kexue.models.base import Transformer, TransformerOutput
from kexue.models.config import TRANSFORMER_REFUSED, TransformerConfig, check_refused, refuse
from kexue.models.weights import Rule, WeightMap

_NORM = r"(weight|bias|cond_\w+\.weight)"  # a norm's own tensors, conditional-LN ones included
_BERT_RULES = [
    Rule(r"embeddings\.token\.weight", r"embeddings.word_embeddings.weight"),
    Rule(r"embeddings\.segment\.weight", r"embeddings.token_type_embeddings.weight"),
    Rule(r"embeddings\.position\.weight", r"embeddings.position_embeddings.weight"),
    Rule(rf"embeddings\.norm\.{_NORM}", r"embeddings.LayerNorm.\1"),
    Rule(r"embeddings\.project\.(weight|bias)", r"embeddings_project.\1"),
    Rule(r"layers\.(\d+)\.attn\.q\.(weight|bias)", r"encoder.layer.\1.attention.self.query.\2"),
    Rule(r"layers\.(\d+)\.attn\.k\.(weight|bias)", r"encoder.layer.\1.attention.self.key.\2"),
    Rule(r"layers\.(\d+)\.attn\.v\.(weight|bias)", r"encoder.layer.\1.attention.self.value.\2"),
    Rule(r"layers\.(\d+)\.attn\.o\.(weight|bias)", r"encoder.layer.\1.attention.output.dense.\2"),
    Rule(rf"layers\.(\d+)\.attn_norm\.{_NORM}", r"encoder.layer.\1.attention.output.LayerNorm.\2"),
    Rule(r"layers\.(\d+)\.ffn\.up\.(weight|bias)", r"encoder.layer.\1.intermediate.dense.\2"),
    Rule(r"layers\.(\d+)\.ffn\.down\.(weight|bias)", r"encoder.layer.\1.output.dense.\2"),
    Rule(rf"layers\.(\d+)\.ffn_norm\.{_NORM}", r"encoder.layer.\1.output.LayerNorm.\2"),
    Rule(r"pooler\.(weight|bias)", r"pooler.dense.\1"),
    Rule(r"mlm\.dense\.(weight|bias)", r"cls.predictions.transform.dense.\1"),
    Rule(rf"mlm\.norm\.{_NORM}", r"cls.predictions.transform.LayerNorm.\1"),
    Rule(r"mlm\.weight", r"cls.predictions.decoder.weight"),  # untied decoders only
    Rule(r"mlm\.bias", r"cls.predictions.decoder.bias"),
]
HEAD, EMBEDDING = "cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"
REFUSED = TRANSFORMER_REFUSED  # HF fields refused unless at the allowed value
# fields of other families: a config holding one names the wrong model_type
FOREIGN = ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "n_embd", "n_layer", "n_head", "d_model",
           "num_heads", "num_layers", "d_ff")

# -- bert4keras (TensorFlow) names ----------------------------------------------------------------------
_TF_NORM = [("weight", "gamma"), ("bias", "beta"), ("cond_gamma.weight", "gamma_dense/kernel"),
            ("cond_beta.weight", "beta_dense/kernel"), ("cond_proj.weight", "hidden_dense/kernel")]
BERT4KERAS_OPTIONAL = (r"cls/.*", r".*/pooler/.*")  # heads a checkpoint may hold that the model lacks


def _tf_norm_rules(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(rf"{ours}\.{re.escape(a)}", f"{theirs}/{b}") for a, b in _TF_NORM]


def bert4keras_rules(model: str = "bert", root: str = "bert", stack: str = "encoder") -> list[tuple[str, str]]:
    """kexue BERT-family names -> Google-BERT TF names as bert4keras writes them (``root`` bert or gpt,
    ``stack`` encoder or transformer; the bert4keras ``model`` name does not change them)."""
    layer = f"{root}/{stack}/layer_{{0}}"
    rules = [
        (r"embeddings\.token\.weight|token\.weight", f"{root}/embeddings/word_embeddings"),
        (r"embeddings\.segment\.weight|segment\.weight", f"{root}/embeddings/token_type_embeddings"),
        (r"embeddings\.position\.weight|position\.weight", f"{root}/embeddings/position_embeddings"),
        (r"embeddings\.project\.weight", f"{root}/{stack}/embedding_hidden_mapping_in/kernel"),
        (r"embeddings\.project\.bias", f"{root}/{stack}/embedding_hidden_mapping_in/bias"),
        (r"pooler\.weight", f"{root}/pooler/dense/kernel"),
        (r"pooler\.bias", f"{root}/pooler/dense/bias"),
        (r"mlm\.dense\.weight", "cls/predictions/transform/dense/kernel"),
        (r"mlm\.dense\.bias", "cls/predictions/transform/dense/bias"),
        (r"mlm\.bias", "cls/predictions/output_bias"),
    ]
    rules += _tf_norm_rules(r"embeddings\.norm", f"{root}/embeddings/LayerNorm")
    rules += _tf_norm_rules(r"mlm\.norm", "cls/predictions/transform/LayerNorm")
    for ours, theirs in (("attn.q", "attention/self/query"), ("attn.k", "attention/self/key"),
                         ("attn.v", "attention/self/value"), ("attn.o", "attention/output/dense"),
                         ("ffn.up", "intermediate/dense"), ("ffn.down", "output/dense")):
        rules.append((rf"layers\.(\d+)\.{re.escape(ours)}\.weight", f"{layer}/{theirs}/kernel"))
        rules.append((rf"layers\.(\d+)\.{re.escape(ours)}\.bias", f"{layer}/{theirs}/bias"))
    rules += _tf_norm_rules(r"layers\.(\d+)\.attn_norm", f"{layer}/attention/output/LayerNorm")
    rules += _tf_norm_rules(r"layers\.(\d+)\.ffn_norm", f"{layer}/output/LayerNorm")
    return rules


class MLMHead(nn.Module):
    """logits = act-dense-norm(h) · Wᵀ + b, W the token embedding (tied) or its own matrix (untied)."""

    def __init__(self, hidden: int, dim: int, vocab_size: int, act: str, norm, bias: bool = True,
                 transform: bool = True, tied: bool = True):
        super().__init__()
        self.dense = nn.Linear(hidden, dim, bias=bias) if transform else None
        self.act = activation(act)
        self.norm = norm() if transform else None
        self.weight = None if tied else nn.Parameter(torch.empty(vocab_size, dim).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def forward(self, h: Tensor, embedding: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.dense is not None:
            h = self.norm(self.act(self.dense(h)), cond)
        return F.linear(h, embedding if self.weight is None else self.weight, self.bias)


class BERT(Transformer):
    family = "bert"
    hf_prefix = "bert."
    hf_architectures = ("BertModel", "BertForMaskedLM")
    bias = True
    learned_positions = True
    has_pooler = True
    config_class = TransformerConfig
    refused = REFUSED  # HF fields refused unless at the allowed value (config.check_refused)
    hf_defaults: dict[str, Any] = {}  # the HF config class's defaults where they differ from TransformerConfig's

    # -- config.json -------------------------------------------------------------------------------
    @classmethod
    def parse_config(cls, d: dict[str, Any], path: str | Path | None = None) -> TransformerConfig:
        """An HF ``BertConfig`` / ``RoFormerConfig`` dict -> :class:`TransformerConfig`, refusing what the
        family does not compute (errors name the field and ``path``)."""
        d = {k: v for k, v in d.items() if k != "kexue"}
        check_refused(d, cls.refused, path)
        if cls.learned_positions and d.get("rotary_value"):
            refuse("rotary_value", d["rotary_value"], "BERT has no rotary positions (use family roformer)", path)
        for name in FOREIGN:
            if name in d:
                refuse(name, d[name], f"a GPT-2 / T5 field in a {cls.family} config (wrong model_type?)", path)
        return cls.config_class.from_dict({**cls.hf_defaults, **d, "model_type": cls.family}, path)

    def hf_config_fields(self) -> dict[str, Any]:
        """The HF fields of ``config.json``; ``model_type`` is ``kexue_<family>`` when transformers cannot
        compute the model (kexue-only options, BERT with factorised embeddings, another RoPE base)."""
        c = self.config
        d = c.to_dict()
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx"):
            d.pop(name)
        if self.learned_positions:
            d.pop("rotary_value"), d.pop("rope_base")
        compatible = self.options.hf_compatible and c.rope_base == 10000.0 \
            and (not self.learned_positions or c.embedding_size in (None, c.hidden_size))
        d["model_type"] = self.family if compatible else f"kexue_{self.family}"
        return d

    def norm_factory(self, dim: int):
        c = self.config
        return lambda: LayerNorm(dim, c.layer_norm_eps, **self.norm_kwargs())

    def build(self) -> None:
        c, o = self.config, self.options
        dim = c.embedding_size or c.hidden_size
        self.embeddings = Embeddings(
            c.vocab_size, dim, self.norm_factory(dim), c.type_vocab_size,
            c.max_position_embeddings if self.learned_positions else None, c.hidden_size,
            c.hidden_dropout_prob, c.pad_token_id, bias=self.bias, hierarchical_alpha=o.hierarchical_alpha,
        )
        self.build_stack()
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size, bias=self.bias) if self.with_pool else None
        self.mlm = self.build_mlm(dim) if self.with_mlm else None
        self.init_weights()

    def build_stack(self) -> None:
        """The layers between the embeddings and the heads (ALBERT shares them)."""
        self.layers = nn.ModuleList(self.build_layer(i) for i in range(self.config.num_hidden_layers))

    def build_layer(self, i: int) -> TransformerBlock:
        c = self.config
        attn = MultiHeadAttention(c.hidden_size, c.num_attention_heads, bias=self.bias,
                                  dropout=c.attention_probs_dropout_prob, layer_idx=i,
                                  entropy_train_len=self.options.entropy_train_len, rotary_value=c.rotary_value)
        ffn = FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act, bias=self.bias)
        return TransformerBlock(attn, ffn, self.norm_factory(c.hidden_size), dropout=c.hidden_dropout_prob)

    def build_mlm(self, dim: int) -> MLMHead:
        c = self.config
        return MLMHead(c.hidden_size, dim, c.vocab_size, c.hidden_act, self.norm_factory(dim),
                       tied=c.tie_word_embeddings)

    def init_weights(self, std: float = 0.02) -> None:
        """N(0, 0.02) for dense and embedding weights, zero biases (BERT's initialisation); the
        conditional-LN projections stay zero so the layers start as plain LayerNorm."""
        for name, module in self.named_modules():
            if ".cond_" in name or name.startswith("cond_"):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def max_positions(self) -> int:
        n = self.config.max_position_embeddings
        return n * n if self.options.hierarchical_alpha is not None else n

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        if segment_ids is None and self.embeddings.segment is not None:
            segment_ids = torch.zeros_like(input_ids)  # HF: token type 0 when none are given
        return self.embeddings(input_ids, segment_ids, position_ids, cond)

    def weight_map(self) -> WeightMap:
        """BERT layout; ``BertForMaskedLM`` names (prefix ``bert.``, ``cls.*``) when the model has an MLM head."""
        optional = [r"cls\.seq_relationship\..*"]
        if self.pooler is None:
            optional.append(r"pooler\..*")
        if self.mlm is None:
            optional.append(r"cls\..*")
        tied = self.mlm is not None and self.mlm.weight is None
        return WeightMap(self, _BERT_RULES, prefix=self.hf_prefix, head=(r"cls\.",), use_prefix=self.mlm is not None,
                         ignore=(r".*position_ids$",) + self.hf_ignore, optional=tuple(optional),
                         aliases={"cls.predictions.decoder.bias": "cls.predictions.bias"} if self.mlm is not None
                         and self.mlm.bias is not None else {},
                         must_equal={HEAD: EMBEDDING} if tied else {}, extras=self.hf_extras())

    hf_ignore: tuple[str, ...] = ()
    hf_head = (HEAD, EMBEDDING)

    def head_tied(self) -> bool | None:
        """Whether the MLM head reads the token embedding (None: no head)."""
        return None if self.mlm is None else self.mlm.weight is None

    def untie_head(self) -> None:
        self.mlm.weight = nn.Parameter(self.embeddings.token.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def hf_extras(self) -> dict[str, Tensor]:
        return {}

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(x[:, 0])
            pooled = pooled if self.options.pool_act == "linear" else activation(self.options.pool_act)(pooled)
        h = x if logits_mask is None else x[logits_mask]  # [N, hidden]: only the positions a loss reads
        logits = self.mlm(h, self.embeddings.token.weight, cond) if self.mlm is not None else None
        return TransformerOutput(hidden=x, pooled=pooled, logits=logits)


class RoFormer(BERT):
    family = "roformer"
    hf_prefix = "roformer."
    hf_ignore = (r"encoder\.embed_positions\.weight",)
    hf_architectures = ("RoFormerModel", "RoFormerForMaskedLM")
    learned_positions = False

    @classmethod
    def uses_rope(cls, options) -> bool:
        return True

    def build(self) -> None:
        super().build()
        # rope_tie: position ids may also be [B, L, 2] / [B, L, 3] (RoPE-Tie; text-only stays RoPE-1D)
        self.rotary = rotary_for(self.config.head_dim, self.config.rope_base, True, self.options.rope_tie)

    def max_positions(self) -> int:
        return 1 << 30  # RoPE extrapolates; no table bounds the length

    def layer_extras(self, position_ids: Tensor) -> dict:
        cos, sin = self.rotary(position_ids)
        return {"rope": (self.rotary, cos, sin)}

    def hf_extras(self) -> dict[str, Tensor]:
        """HF RoFormer stores its sinusoidal table as a weight; write it so HF loads our files."""
        c = self.config
        return {"encoder.embed_positions.weight": sinusoidal(c.max_position_embeddings, c.head_dim)}


class RoFormerV2(RoFormer):
    family = "roformer_v2"
    hf_architectures = ("RoFormerV2Model", "RoFormerV2ForMaskedLM")  # kexue-only layout
    bias = False
    conditional_norm = False  # RMS norms without gain or bias: nothing for Conditional LayerNorm

    def norm_factory(self, dim: int):
        eps = self.config.layer_norm_eps
        return lambda: RMSNorm(dim, eps, affine=False)

    def build_mlm(self, dim: int) -> MLMHead:
        c = self.config
        return MLMHead(c.hidden_size, dim, c.vocab_size, c.hidden_act, None, bias=False, transform=False,
                       tied=c.tie_word_embeddings)
