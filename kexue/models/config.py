"""Model hyper-parameters: the HF ``config.json`` of each family read field by field, plus kexue's options.

``config.json`` = the Hugging Face config of the family (``BertConfig``, ``RoFormerConfig``,
``GPT2Config``, ``T5Config`` / ``MT5Config`` field names) + one ``"kexue"`` block (:class:`Options`)
holding what only kexue knows: family, application, heads, conditional LayerNorm, hierarchical
positions, the entropy-invariant scale, RoPE / norm placement for GPT.

No silent option: every HF field that changes the computation is either implemented or refused
with an error naming the field and the file (each family's ``refused`` table, checked by
:func:`check_refused`); docs/checkpoints.md lists both. What a family accepts (applications, config
fields, options) is said by its model file and its record in :mod:`kexue.models.family`; this module
holds no per-family table.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexue.io import read_utf8
from kexue.layers.ffn import ACTIVATIONS

ACTIVATION_NAMES = tuple(ACTIVATIONS)


class ConfigError(ValueError):
    """A config.json that kexue cannot compute faithfully; the message names the field and the file."""


def _where(path) -> str:
    return f" in {path}" if path else ""


def check_type(name: str, value: Any, kind: str, path=None) -> None:
    """kind: int | pos_int | float | bool | str | opt_int | opt_float | opt_str | list."""
    base, optional = kind.removeprefix("opt_"), kind.startswith("opt_")
    if optional and value is None:
        return
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "pos_int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "tie": isinstance(value, bool) or (isinstance(value, int) and value in (2, 3)),
    }[base]
    if not ok:
        want = {"pos_int": "a positive integer", "int": "an integer", "float": "a number", "bool": "true/false",
                "str": "a string", "list": "a list",
                "tie": "true/false or the number of axes (2 or 3)"}[base]
        raise ConfigError(f"config field {name!r}{_where(path)} must be {want}{' or null' if optional else ''}, "
                          f"got {value!r}")


def refuse(name: str, value: Any, why: str, path=None) -> None:
    raise ConfigError(f"config field {name!r}={value!r}{_where(path)} is not supported by kexue: {why}")


# Fields that change the computation and that the Transformer families (BERT, RoFormer, GPT) do not
# implement: allowed only at these values. A family's ``REFUSED`` table starts from it.
TRANSFORMER_REFUSED = {
    "is_decoder": (False, "a BERT-style decoder with cross-attention; use application='lm' / 'unilm'"),
    "add_cross_attention": (False, "cross-attention layers in an encoder family"),
    "is_encoder_decoder": (False, "encoder-decoder models are family t5"),
    "position_embedding_type": ("absolute", "relative_key / relative_key_query positions"),
    "pruned_heads": ({}, "pruned attention heads"),
    "tie_encoder_decoder": (False, "tied encoder/decoder stacks"),
    "use_bfloat16": (False, "bfloat16 computation"),
}


def check_refused(d: dict, refused: dict[str, tuple[Any, str]], path=None) -> None:
    """Refuse every field of ``d`` that ``refused`` (name -> (allowed value, why)) allows only at another value."""
    for name, (allowed, why) in refused.items():
        if name in d and d[name] != allowed and not (allowed == {} and not d[name]):
            refuse(name, d[name], why, path)


@dataclass
class TransformerConfig:
    """BERT / RoFormer / RoFormer-v2 / GPT hyper-parameters under BertConfig's names (GPT-2's
    ``n_embd`` etc. are translated by :func:`from_hf` / :meth:`to_hf`)."""
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int | None = 0
    embedding_size: int | None = None  # RoFormer / ALBERT style factorised embeddings
    model_type: str = "bert"
    rope_base: float = 10000.0
    rotary_value: bool = False  # RoFormer: rotate the values too
    tie_word_embeddings: bool = True  # output head = token embedding (HF semantics, see weights.py)
    scale_attn_weights: bool = True  # GPT-2: divide logits by √d
    scale_attn_by_inverse_layer_idx: bool = False  # GPT-2: and by layer index + 1
    extra: dict[str, Any] = field(default_factory=dict)  # fields that do not change the computation

    TYPES = {"vocab_size": "pos_int", "hidden_size": "pos_int", "num_hidden_layers": "pos_int",
             "num_attention_heads": "pos_int", "intermediate_size": "pos_int", "hidden_act": "str",
             "max_position_embeddings": "pos_int", "type_vocab_size": "int", "layer_norm_eps": "float",
             "hidden_dropout_prob": "float", "attention_probs_dropout_prob": "float", "pad_token_id": "opt_int",
             "embedding_size": "opt_int", "model_type": "str", "rope_base": "float", "rotary_value": "bool",
             "tie_word_embeddings": "bool", "scale_attn_weights": "bool",
             "scale_attn_by_inverse_layer_idx": "bool"}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any], path=None) -> "TransformerConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k not in ("extra", "kexue")}
        extra.update(d.get("extra", {}))
        for k, v in known.items():
            check_type(k, v, cls.TYPES[k], path)
        cfg = cls(**known, extra=extra)
        cfg.validate(path)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "TransformerConfig":
        return cls.from_dict(read_config(path), path)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        if d["embedding_size"] is None:
            d.pop("embedding_size")
        return {**extra, **d}

    def validate(self, path=None) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.{name}{_where(path)} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_attention_heads}{_where(path)}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"config.type_vocab_size{_where(path)} must be >= 0, got {self.type_vocab_size}")
        if self.hidden_act not in ACTIVATIONS:
            refuse("hidden_act", self.hidden_act, f"known activations: {sorted(ACTIVATIONS)}", path)


# GPT-2's names -> ours (dropouts: resid_pdrop for residual branches, embd_pdrop for embeddings)
GPT2_NAMES = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
              "n_inner": "intermediate_size", "activation_function": "hidden_act",
              "n_positions": "max_position_embeddings", "layer_norm_epsilon": "layer_norm_eps",
              "resid_pdrop": "hidden_dropout_prob", "attn_pdrop": "attention_probs_dropout_prob"}
GPT2_DEFAULTS = {"vocab_size": 50257, "n_embd": 768, "n_inner": None, "n_layer": 12, "n_head": 12, "n_positions": 1024,
                 "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1,
                 "attn_pdrop": 0.1, "embd_pdrop": 0.1, "type_vocab_size": 0, "pad_token_id": None}


def gpt2_to_ours(hf: dict[str, Any]) -> dict[str, Any]:
    d = {**GPT2_DEFAULTS, **hf}
    out = {k: v for k, v in d.items() if k not in GPT2_NAMES}
    for theirs, ours in GPT2_NAMES.items():
        out[ours] = d[theirs]
    if out["intermediate_size"] is None:
        out["intermediate_size"] = 4 * out["hidden_size"]
    out["model_type"] = "gpt"
    return out


def ours_to_gpt2(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k not in GPT2_NAMES.values() and k not in ("rotary_value", "embedding_size")}
    for theirs, ours in GPT2_NAMES.items():
        out[theirs] = d[ours]
    if not out.get("type_vocab_size"):
        out.pop("type_vocab_size", None)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object of ``config.json`` (a folder or the file), errors naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    text = read_utf8(path, ConfigError)  # not UTF-8: FILE:LINE named
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(d).__name__}")
    return d


@dataclass
class Options:
    """The ``"kexue"`` block of config.json: what a model is built for, beyond the HF config.

    application: encoder (bidirectional) | lm (causal) | unilm (seq2seq prefix mask) | seq2seq (T5).
    cond_*: Conditional LayerNorm, γ(c) = γ + W_γ act(W_h c), β likewise (W_h only with cond_hidden).
    hierarchical_alpha: hierarchical decomposition of the learned positions (bert4keras's
    ``hierarchical_position=True`` is α = 0.4). entropy_train_len: scale logits by log n / log N.
    rope / pre_norm / final_norm: GPT only (pre_norm=final_norm=False is bert4keras's ``gpt``).
    rope_tie: RoPE-Tie (true = 2 axes, or 3) for RoPE models: position ids may be [B, L, axes].
    pool_act: the pooler's activation (tanh, HF's; bert4keras's ``with_pool='linear'`` for SimBERT).
    with_discriminator: ELECTRA only, the replaced-token detection head (bert4keras's ``with_discriminator``).
    cross_position_bias: T5 only, bert4keras's default: cross-attention adds the decoder's relative-position
    bias of query i and encoder key j (T5 PEGASUS was trained with it; transformers has no such option).
    """
    family: str = "bert"
    application: str = "encoder"
    with_pool: bool = False
    with_mlm: bool = False
    cond_dim: int | None = None
    cond_hidden: int | None = None
    cond_hidden_act: str = "linear"
    hierarchical_alpha: float | None = None
    entropy_train_len: int | None = None
    rope: bool = False
    pre_norm: bool = True
    final_norm: bool = True
    rope_tie: bool | int = False
    cross_position_bias: bool = False
    pool_act: str = "tanh"
    with_discriminator: bool = False
    task: str | None = None
    labels: list | None = None

    TYPES = {"family": "str", "application": "str", "with_pool": "bool", "with_mlm": "bool", "cond_dim": "opt_int",
             "cond_hidden": "opt_int", "cond_hidden_act": "str", "hierarchical_alpha": "opt_float",
             "entropy_train_len": "opt_int", "rope": "bool", "pre_norm": "bool", "final_norm": "bool",
             "rope_tie": "tie", "task": "opt_str", "labels": "opt_list", "cross_position_bias": "bool",
             "pool_act": "str", "with_discriminator": "bool"}
    BASE = ("family", "application", "task", "labels")  # every family's; the rest depends on the family
    QUIET = {"pool_act": "tanh", "cross_position_bias": False, "with_discriminator": False}  # written only when not at this default

    @classmethod
    def from_dict(cls, d: dict[str, Any], path=None) -> "Options":
        unknown = sorted(set(d) - set(cls.TYPES))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in the 'kexue' block{_where(path)}; known: {sorted(cls.TYPES)}")
        for k, v in d.items():
            check_type(f"kexue.{k}", v, cls.TYPES[k], path)
        opts = cls(**d)
        opts.validate(path)
        return opts

    def to_dict(self, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The block as written: family, application, the family's option ``keys`` (its model class's
        ``option_keys``; all when None), task / labels when set; ``QUIET`` keys only when not at their default."""
        keep = set(self.TYPES) if keys is None else {*self.BASE, *keys}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k in keep and not (k in ("task", "labels") and v is None)
                and not (k in self.QUIET and v == self.QUIET[k])}

    def refuse(self, key: str, why: str, path=None) -> None:
        raise ConfigError(f"option kexue.{key}={getattr(self, key)!r}{_where(path)} {why}")

    def check_family(self, family: str, applications: tuple[str, ...], keys: tuple[str, ...], path=None) -> None:
        """The family-independent part of a family's rules (its model class's ``check_options`` calls it):
        the options are this family's, the application one of its ``applications``, and every option
        outside its ``keys`` stays at its default."""
        if self.family != family:
            raise ConfigError(f"option kexue.family={self.family!r}{_where(path)} does not match the {family} model")
        if self.application not in applications:
            raise ConfigError(f"application {self.application!r}{_where(path)} is not one of family "
                              f"{family}'s: {applications}")
        defaults = Options()
        for k in self.TYPES:
            if k not in self.BASE and k not in keys and getattr(self, k) != getattr(defaults, k):
                self.refuse(k, f"is not available for family {family}", path)

    def validate(self, path=None) -> None:
        """The rules that hold for every family (the family's own: its model class's ``check_options``)."""
        if self.pool_act != "linear" and self.pool_act not in ACTIVATIONS:
            raise ConfigError(f"option kexue.pool_act={self.pool_act!r}{_where(path)} is unknown; "
                              f"known: linear, {sorted(ACTIVATIONS)}")
        if self.pool_act != "tanh" and not self.with_pool:
            raise ConfigError(f"option kexue.pool_act={self.pool_act!r}{_where(path)} needs with_pool=true "
                              "(BERT family)")
        if self.hierarchical_alpha is not None and not 0 < self.hierarchical_alpha < 1:
            raise ConfigError(f"option kexue.hierarchical_alpha{_where(path)} must lie in (0, 1), "
                              f"got {self.hierarchical_alpha}")
        if self.entropy_train_len is not None and self.entropy_train_len < 2:
            raise ConfigError(f"option kexue.entropy_train_len{_where(path)} must be >= 2")
        for k in ("cond_dim", "cond_hidden"):
            if getattr(self, k) is not None and getattr(self, k) <= 0:
                raise ConfigError(f"option kexue.{k}{_where(path)} must be positive")
        if self.cond_hidden is not None and self.cond_dim is None:
            raise ConfigError(f"option kexue.cond_hidden{_where(path)} needs cond_dim")
        if self.cond_hidden_act != "linear" and self.cond_hidden_act not in ACTIVATIONS:
            raise ConfigError(f"option kexue.cond_hidden_act={self.cond_hidden_act!r}{_where(path)} is unknown; "
                              f"known: linear, {sorted(ACTIVATIONS)}")
        if self.cond_hidden_act != "linear" and self.cond_hidden is None:
            raise ConfigError(f"option kexue.cond_hidden_act{_where(path)} needs cond_hidden")

    @property
    def hf_compatible(self) -> bool:
        """Whether transformers computes this model (else config.json gets model_type kexue_<family>)."""
        return (self.cond_dim is None and self.hierarchical_alpha is None and self.entropy_train_len is None
                and not self.rope and self.pre_norm and self.final_norm and self.pool_act == "tanh")
