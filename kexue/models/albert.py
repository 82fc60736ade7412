"""ALBERT (Lan et al., arXiv 1909.11942): BERT with a factorised embedding and layers shared across depth.

    e   = LN(E_tok[x] + E_seg[s] + E_pos[p]) ∈ R^E,      h_0 = W_map e + b  ∈ R^H   (E ≪ H)
    h_i = Block_{g(i)}(h_{i-1}),   g(i) = ⌊i / (L / G)⌋,   i = 0 … L-1

with G = ``num_hidden_groups`` groups of ``inner_group_num`` post-norm blocks each (G = 1: one block
applied L times, the released ALBERTs). The MLM head maps back to E and is tied to the E-wide token
embedding. bert4keras builds two models from one ALBERT checkpoint: ``albert`` (shared) and
``albert_unshared``, every layer starting from the shared weights and then trained on its own
(《抛开约束，增强模型：一行代码提升albert表现》, https://kexue.fm/archives/7187): here that is G = L.
The HF layout is transformers' ``AlbertModel`` / ``AlbertForMaskedLM`` (``albert_layer_groups.g.albert_layers.j``),
which computes both; a shared layer applied at depth i keeps its keys and values in cache slot i.

bert4keras TF names (:func:`bert4keras_rules`): ``bert/encoder/transformer/group_0/inner_group_0/...``
for the shared block. bert4keras saves an ``albert_unshared`` model by writing every layer under that
one name, so TensorFlow makes the names unique in layer order (``.../kernel``, ``.../kernel_1``, ...);
layer i is read from suffix ``_i`` when the checkpoint holds such copies, else from the shared name (a
shared ALBERT checkpoint loaded unshared, as bert4keras does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from kexue.models.bert import _NORM, BERT, BERT4KERAS_OPTIONAL, _tf_norm_rules
from kexue.models.bert import bert4keras_rules as bert_tf_rules
from kexue.models.config import ConfigError, TransformerConfig
from kexue.models.weights import Bert4kerasNames, Rule, WeightMap


@dataclass
class AlbertConfig(TransformerConfig):
    """BERT's fields + ``num_hidden_groups`` (G) and ``inner_group_num`` (blocks per group)."""
    num_hidden_groups: int = 1
    inner_group_num: int = 1

    TYPES = {**TransformerConfig.TYPES, "num_hidden_groups": "pos_int", "inner_group_num": "pos_int"}

    def validate(self, path=None) -> None:
        super().validate(path)
        if not 0 < self.num_hidden_groups <= self.num_hidden_layers:
            raise ConfigError(f"config.num_hidden_groups={self.num_hidden_groups}{' in ' + str(path) if path else ''} "
                              f"must lie in [1, num_hidden_layers={self.num_hidden_layers}]")


# transformers' AlbertConfig defaults (tests/models/test_albert_nezha_electra.py compares them)
HF_DEFAULTS = dict(vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12, num_hidden_groups=1,
                   num_attention_heads=64, intermediate_size=16384, inner_group_num=1, hidden_act="gelu_new",
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                   type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)

_G, _L = r"groups\.(\d+)\.(\d+)", r"encoder.albert_layer_groups.\1.albert_layers.\2"
_RULES = [
    Rule(r"embeddings\.token\.weight", "embeddings.word_embeddings.weight"),
    Rule(r"embeddings\.segment\.weight", "embeddings.token_type_embeddings.weight"),
    Rule(r"embeddings\.position\.weight", "embeddings.position_embeddings.weight"),
    Rule(rf"embeddings\.norm\.{_NORM}", r"embeddings.LayerNorm.\1"),
    Rule(r"embeddings\.project\.(weight|bias)", r"encoder.embedding_hidden_mapping_in.\1"),
    Rule(rf"{_G}\.attn\.q\.(weight|bias)", rf"{_L}.attention.query.\3"),
    Rule(rf"{_G}\.attn\.k\.(weight|bias)", rf"{_L}.attention.key.\3"),
    Rule(rf"{_G}\.attn\.v\.(weight|bias)", rf"{_L}.attention.value.\3"),
    Rule(rf"{_G}\.attn\.o\.(weight|bias)", rf"{_L}.attention.dense.\3"),
    Rule(rf"{_G}\.attn_norm\.{_NORM}", rf"{_L}.attention.LayerNorm.\3"),
    Rule(rf"{_G}\.ffn\.up\.(weight|bias)", rf"{_L}.ffn.\3"),
    Rule(rf"{_G}\.ffn\.down\.(weight|bias)", rf"{_L}.ffn_output.\3"),
    Rule(rf"{_G}\.ffn_norm\.{_NORM}", rf"{_L}.full_layer_layer_norm.\3"),
    Rule(r"pooler\.(weight|bias)", r"pooler.\1"),
    Rule(r"mlm\.dense\.(weight|bias)", r"predictions.dense.\1"),
    Rule(rf"mlm\.norm\.{_NORM}", r"predictions.LayerNorm.\1"),
    Rule(r"mlm\.weight", "predictions.decoder.weight"),  # untied decoders only
    Rule(r"mlm\.bias", "predictions.bias"),
]
HEAD, EMBEDDING = "predictions.decoder.weight", "embeddings.word_embeddings.weight"

# -- bert4keras (TensorFlow) names ----------------------------------------------------------------------
_TF_BLOCK = [("attn.q", "attention_1/self/query"), ("attn.k", "attention_1/self/key"),
             ("attn.v", "attention_1/self/value"), ("attn.o", "attention_1/output/dense"),
             ("ffn.up", "ffn_1/intermediate/dense"), ("ffn.down", "ffn_1/intermediate/output/dense")]


def bert4keras_rules(model: str = "albert") -> list[tuple[str, str | tuple[str, ...]]]:
    """kexue ALBERT names -> bert4keras's: ``albert`` reads group g, block j from ``group_g/inner_group_j``;
    ``albert_unshared`` (G = L groups of one block) reads every layer from ``group_0/inner_group_0``,
    layer i >= 1 from its TensorFlow-uniquified copy (``<name>_i``) when the checkpoint holds copies."""
    pairs = []
    for ours, theirs in _TF_BLOCK:
        pairs += [(rf"{re.escape(ours)}\.weight", f"{theirs}/kernel"), (rf"{re.escape(ours)}\.bias", f"{theirs}/bias")]
    pairs += _tf_norm_rules("attn_norm", "LayerNorm") + _tf_norm_rules("ffn_norm", "LayerNorm_1")
    root = "bert/encoder/transformer"
    if model == "albert_unshared":
        first = [(rf"groups\.0\.0\.{ours}", f"{root}/group_0/inner_group_0/{theirs}") for ours, theirs in pairs]
        rest = [(rf"groups\.(\d+)\.0\.{ours}", (f"{root}/group_0/inner_group_0/{theirs}_{{0}}",
                                                f"{root}/group_0/inner_group_0/{theirs}")) for ours, theirs in pairs]
        rules = first + rest
    else:
        rules = [(rf"{_G}\.{ours}", f"{root}/group_{{0}}/inner_group_{{1}}/{theirs}") for ours, theirs in pairs]
    return rules + bert_tf_rules()  # embeddings, mapping, pooler, MLM: BERT's names


BERT4KERAS_NAMES = Bert4kerasNames(
    ("albert", "albert_unshared"), bert4keras_rules, BERT4KERAS_OPTIONAL,
    marks=(r"bert/encoder/transformer/group_\d+/.*",),
    config_marks=("num_hidden_groups", "inner_group_num", "net_structure_type", "gap_size", "num_memory_blocks",
                  "down_scale_factor"))


class _CacheSlot:
    """A KV cache seen by one application of a shared block: the block applied at depth i uses slot i."""

    def __init__(self, cache, index: int):
        self.cache, self.index = cache, index

    @property
    def length(self) -> int:
        return self.cache.length

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.cache.update(self.index, k, v)


class ALBERT(BERT):
    family = "albert"
    hf_prefix = "albert."
    hf_architectures = ("AlbertModel", "AlbertForMaskedLM")
    config_class = AlbertConfig
    hf_defaults = HF_DEFAULTS
    hf_head = (HEAD, EMBEDDING)

    def hf_config_fields(self) -> dict[str, Any]:
        d = super().hf_config_fields()
        d["embedding_size"] = self.config.embedding_size or self.config.hidden_size
        d["model_type"] = self.family if self.options.hf_compatible else f"kexue_{self.family}"
        return d

    def build_stack(self) -> None:
        c = self.config
        self.groups = nn.ModuleList(
            nn.ModuleList(self.build_layer(g * c.inner_group_num + j) for j in range(c.inner_group_num))
            for g in range(c.num_hidden_groups))
        if self.embeddings.project is None:  # HF's ALBERT maps E -> H even when E = H
            self.embeddings.project = nn.Linear(c.hidden_size, c.hidden_size)

    def apply_main_layers(self, x, mask, position_ids, cond, cache, hidden) -> Tensor:
        c = self.config
        for i in range(c.num_hidden_layers):
            group = self.groups[int(i / (c.num_hidden_layers / c.num_hidden_groups))]  # transformers' formula
            for j, layer in enumerate(group):
                slot = None if cache is None else _CacheSlot(cache, i * c.inner_group_num + j)
                x = self.block(layer, x, mask, cond=cond, cache=slot, cached=slot is not None)
            if hidden is not None:
                hidden.append(x)
        return x

    def num_blocks(self) -> int:
        return self.config.num_hidden_layers

    def block_depth(self, name: str) -> int | None:
        """A shared group's parameters take the depth of the highest layer that applies the group."""
        m = re.match(r"groups\.(\d+)\.", name)
        if m is None:
            return None
        c, g = self.config, int(m.group(1))
        return max(i + 1 for i in range(c.num_hidden_layers)
                   if int(i / (c.num_hidden_layers / c.num_hidden_groups)) == g)

    def weight_map(self) -> WeightMap:
        """``AlbertModel`` names; ``AlbertForMaskedLM``'s (prefix ``albert.``, ``predictions.*``) with the MLM head."""
        optional = [r"sop_classifier\..*"]
        if self.pooler is None:
            optional.append(r"pooler\..*")
        if self.mlm is None:
            optional.append(r"predictions\..*")
        tied = self.mlm is not None and self.mlm.weight is None
        return WeightMap(self, _RULES, prefix=self.hf_prefix, head=(r"predictions\.", r"sop_classifier\."),
                         use_prefix=self.mlm is not None, ignore=(r".*position_ids$", r".*token_type_ids$"),
                         optional=tuple(optional),
                         aliases={"predictions.bias": "predictions.decoder.bias"} if self.mlm is not None else {},
                         must_equal={HEAD: EMBEDDING} if tied else {})
