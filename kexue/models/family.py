"""Model families and ``build_model``: bert4keras's ``build_transformer_model``, one registry for all.

A :class:`Family` says which model class computes it, how its HF ``config.json`` is read and
written, which applications it serves and (through the model's ``weight_map()``) how its tensors
are named in the HF layout. ``build_model`` reads a config (a ``config.json`` folder, a dict or a
config object), the ``"kexue"`` block of options and, given a checkpoint, loads its weights
strictly: a folder never yields random weights silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from kexue.models.base import Transformer
from kexue.models.bert import BERT, RoFormer, RoFormerV2
from kexue.models.config import ACTIVATION_NAMES, APPLICATIONS, MODEL_TYPES, ConfigError, Options, TransformerConfig, check_refused, check_type, family_of, gpt2_to_ours, ours_to_gpt2, read_config, refuse
from kexue.models.gpt import GPT
from kexue.models.t5 import T5, T5Config
from kexue.models.weights import LoadReport, load_state


@dataclass(frozen=True)
class Family:
    name: str
    model: type[nn.Module]
    parse_config: Callable[..., Any]  # (HF config dict, path=None) -> config object
    config_to_hf: Callable[[nn.Module], dict]  # model -> HF config.json fields (without the kexue block)
    applications: tuple[str, ...]

    def build(self, config, options: Options) -> nn.Module:
        return self.model(config, options=options)

    def weight_map(self, model: nn.Module):
        return model.weight_map()


# -- config handling per family --------------------------------------------------------------------
def _encoder_config(family: str):
    def parse(d: dict[str, Any], path=None) -> TransformerConfig:
        d = {k: v for k, v in d.items() if k != "kexue"}
        check_refused(d, family, path)
        if family == "bert" and d.get("rotary_value"):
            refuse("rotary_value", d["rotary_value"], "BERT has no rotary positions (use family roformer)", path)
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "n_embd", "n_layer", "n_head",
                     "d_model", "num_heads", "num_layers", "d_ff"):
            if name in d:
                refuse(name, d[name], f"a GPT-2 / T5 field in a {family} config (wrong model_type?)", path)
        return TransformerConfig.from_dict({**d, "model_type": family}, path)
    return parse


def _encoder_to_hf(model: Transformer) -> dict[str, Any]:
    c, family = model.config, model.family
    d = c.to_dict()
    for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx"):
        d.pop(name)
    if family == "bert":
        d.pop("rotary_value"), d.pop("rope_base")
    compatible = model.options.hf_compatible and (family != "bert" or c.embedding_size in (None, c.hidden_size)) \
        and c.rope_base == 10000.0
    d["model_type"] = family if compatible else f"kexue_{family}"
    return d


GPT2_TYPES = {"n_embd": "pos_int", "n_layer": "pos_int", "n_head": "pos_int", "n_inner": "opt_int",
              "n_positions": "pos_int", "activation_function": "str", "layer_norm_epsilon": "float",
              "resid_pdrop": "float", "attn_pdrop": "float", "embd_pdrop": "float"}


def _gpt_config(d: dict[str, Any], path=None) -> TransformerConfig:
    d = {k: v for k, v in d.items() if k != "kexue"}
    check_refused(d, "gpt", path)
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


def _gpt_to_hf(model: GPT) -> dict[str, Any]:
    d = model.config.to_dict()
    if not model.options.rope:
        d.pop("rope_base")
    compatible = model.options.hf_compatible and not model.config.type_vocab_size
    d["model_type"] = "gpt2" if compatible else "kexue_gpt"
    return ours_to_gpt2(d)


def _t5_to_hf(model: T5) -> dict[str, Any]:
    d = model.config.to_hf()
    if model.options.cross_position_bias:  # bert4keras's cross-attention bias: transformers cannot compute it
        d["model_type"] = "kexue_t5"
    return d


REGISTRY: dict[str, Family] = {
    "bert": Family("bert", BERT, _encoder_config("bert"), _encoder_to_hf, APPLICATIONS["bert"]),
    "roformer": Family("roformer", RoFormer, _encoder_config("roformer"), _encoder_to_hf, APPLICATIONS["roformer"]),
    "roformer_v2": Family("roformer_v2", RoFormerV2, _encoder_config("roformer_v2"), _encoder_to_hf,
                          APPLICATIONS["roformer_v2"]),
    "gpt": Family("gpt", GPT, _gpt_config, _gpt_to_hf, APPLICATIONS["gpt"]),
    "t5": Family("t5", T5, T5Config.from_dict, _t5_to_hf, APPLICATIONS["t5"]),
}
FAMILIES = {name: f.model for name, f in REGISTRY.items()}


def _family(name: str) -> Family:
    if name not in REGISTRY:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def hf_config(model: nn.Module) -> dict[str, Any]:
    """The model's ``config.json``: HF fields, ``architectures`` and the ``"kexue"`` block."""
    fam = REGISTRY[model.options.family]
    d = fam.config_to_hf(model)
    d["architectures"] = [model.hf_architectures[1 if getattr(model, "with_mlm", True) else 0]]
    d["kexue"] = model.options.to_dict()
    return d


def build_model(
    config: TransformerConfig | T5Config | dict[str, Any] | str | Path | None = None,
    checkpoint: str | Path | None = None,
    family: str | None = None,
    application: str | None = None,
    strict: bool = True,
    **options: Any,
) -> nn.Module:
    """Build a model of any family and, given ``checkpoint`` (an HF-layout folder), load its weights.

    ``config``: a ``config.json`` path / folder, a dict (HF fields, optionally a ``"kexue"`` block;
    option keys may also sit at the top level), a config object, or ``None`` to read the checkpoint's.
    ``family`` defaults to the kexue block's, else the HF ``model_type``. ``application``:
    ``encoder`` | ``lm`` | ``unilm`` (BERT family), ``lm`` (GPT), ``seq2seq`` (T5); lm / unilm always
    build the output head. ``options``: the kexue block's keys (:class:`Options`), overriding the
    file's (``None`` leaves the file's value).
    """
    path = None
    if config is None:
        if checkpoint is None:
            raise ValueError("build_model needs a config or a checkpoint folder holding config.json")
        config = checkpoint
    if isinstance(config, (str, Path)):
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        d = read_config(path)
    elif isinstance(config, dict):
        d = dict(config)
        block = dict(d.get("kexue") or {})
        for k in list(d):  # convenience: option keys at the top level of an in-code dict
            if k in Options.TYPES and k not in TransformerConfig.TYPES and k != "family":
                block.setdefault(k, d.pop(k))
        d["kexue"] = block
    elif isinstance(config, (TransformerConfig, T5Config)):
        d = None
    else:
        raise TypeError(f"config must be a path, a dict or a config object, not {type(config).__name__}")

    if d is not None:
        block = d.get("kexue") or {}
        if not isinstance(block, dict):
            raise ConfigError(f"the 'kexue' block{' in ' + str(path) if path else ''} must be a JSON object")
        found = family_of(d, path)
        if family is not None and "family" in block and block["family"] != family:
            raise ConfigError(f"family={family!r} contradicts the config's kexue.family={block['family']!r}"
                              f"{' in ' + str(path) if path else ''}")
        fam = _family(family or found)
        cfg = fam.parse_config(d, path)
    else:
        block = {}
        fam = _family(family or MODEL_TYPES.get(config.model_type, config.model_type))
        cfg = config
        if fam.name == "gpt" and not isinstance(cfg, TransformerConfig) or (fam.name == "t5") != isinstance(cfg, T5Config):
            raise ConfigError(f"a {type(cfg).__name__} cannot build family {fam.name}")
        if isinstance(cfg, TransformerConfig):
            cfg.model_type = fam.name
    # an option passed as None means "not given": the file's value (or the default) stands
    merged = {**block, **{k: v for k, v in options.items() if v is not None}, "family": fam.name}
    if application is not None:
        merged["application"] = application
    merged.setdefault("application", fam.model.default_application if fam.name != "t5" else "seq2seq")
    model = fam.build(cfg, Options.from_dict(merged, path))
    if checkpoint is not None:
        from kexue.models.checkpoints import load_checkpoint

        load_checkpoint(model, checkpoint, strict=strict)
    return model


def from_state(family: str, config: dict[str, Any], state: dict[str, Tensor], strict: bool = True,
               **options: Any) -> nn.Module:
    """Build a model from an HF config dict and an HF-named state dict (e.g. ``hf_model.state_dict()``)."""
    model = build_model(config, family=family, **options)
    load_state(model, state, strict=strict)
    return model


__all__ = ["Family", "REGISTRY", "FAMILIES", "build_model", "from_state", "hf_config", "LoadReport"]
