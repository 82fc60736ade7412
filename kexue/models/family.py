"""Model families and ``build_model``: bert4keras's ``build_transformer_model``, one registry for all.

The models floor, bottom up::

    config, weights  <  files (weight files)  <  base, bert, gpt, t5 (model files)  <  family  <  checkpoints

A model file computes a family and says how its ``config.json`` is read and written, how its tensors
are named in the HF layout and in bert4keras checkpoints; it never imports this module. One
:class:`Family` record per family gathers those rules with the family's tokenizer and how generation
decodes it, and :data:`REGISTRY` holds the records. ``build_model`` reads a config (a ``config.json``
folder, a dict or a config object), the ``"kexue"`` block of options and, given a checkpoint, loads its
weights strictly: a folder never yields random weights silently. Adding a family is one model file
plus one record (docs/adding-a-family.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from kexue.models.bert import BERT, BERT4KERAS_OPTIONAL, RoFormer, RoFormerV2
from kexue.models.bert import REFUSED as BERT_REFUSED
from kexue.models.bert import bert4keras_rules as bert_tf_rules
from kexue.models.config import ConfigError, Options, TransformerConfig, read_config
from kexue.models import albert, electra, nezha
from kexue.models.files import load_checkpoint
from kexue.models.gau_alpha import REFUSED as GAU_REFUSED
from kexue.models.gau_alpha import GAUAlpha, GAUConfig
from kexue.models.gau_alpha import bert4keras_rules as gau_tf_rules
from kexue.models.gpt import GPT
from kexue.models.gpt import REFUSED as GPT_REFUSED
from kexue.models.gpt import bert4keras_rules as gpt_tf_rules
from kexue.models.gpt2_ml import REFUSED as GPT2_ML_REFUSED
from kexue.models.gpt2_ml import GPT2ML
from kexue.models.gpt2_ml import bert4keras_rules as gpt2_ml_tf_rules
from kexue.models.t5 import REFUSED as T5_REFUSED
from kexue.models.t5 import T5, T5Config, folder_tokenizer
from kexue.models.t5 import bert4keras_rules as t5_tf_rules
from kexue.models.vocab import Compound, parse_compound_tokens, parse_keep_tokens, trim_model
from kexue.models.tf_checkpoint import list_variables
from kexue.models.weights import Bert4kerasNames, LoadReport, WeightMap, load_state
from kexue.text import load_tokenizer
from kexue.text.tokenizer import Tokenizer
from kexue.hub import resolve  # hub ids -> local folders (floor 1)

# How generation decodes a model (kexue.generation.decoding_state): one token at a time under a causal
# mask, after a bidirectional prefix (UniLM), or with a decoder reading an encoder's output.
CAUSAL, PREFIX, ENCODER_DECODER = "causal", "prefix", "encoder-decoder"
DECODING_KINDS = (CAUSAL, PREFIX, ENCODER_DECODER)


@dataclass(frozen=True)
class Family:
    """Everything kexue knows about one family; each field points into the family's model file.

    ``model``: the class that computes it (its ``applications``, ``option_keys`` and ``check_options``
    say what its kexue block may hold). ``config``: its config class; ``parse_config(d, path)``: an HF
    ``config.json`` dict -> ``config``, refusing the ``refused`` fields (name -> (allowed value, why))
    and anything else it cannot compute; ``config_to_hf(model)``: the HF fields written back.
    ``model_types``: the HF ``model_type`` values read as this family (``kexue_<name>`` is implied, the
    type written for variants transformers cannot compute). ``weight_map(model)``: its HF tensor names
    (:class:`~kexue.models.weights.WeightMap`); ``bert4keras``: its names in bert4keras TF checkpoints.
    ``tokenizer(directory)``: the tokenizer of a saved folder. ``decoding``: application -> how
    generation decodes it (:data:`CAUSAL`, :data:`PREFIX`, :data:`ENCODER_DECODER`); an application
    not listed does not generate.
    """
    name: str
    model: type[nn.Module]
    config: type
    parse_config: Callable[..., Any]
    refused: dict[str, tuple[Any, str]]
    config_to_hf: Callable[[nn.Module], dict[str, Any]]
    model_types: tuple[str, ...]
    weight_map: Callable[[nn.Module], WeightMap]
    bert4keras: Bert4kerasNames
    tokenizer: Callable[[str | Path], Tokenizer]
    decoding: dict[str, str]

    def __post_init__(self):
        if getattr(self.model, "family", None) != self.name:
            raise ValueError(f"family record {self.name!r}: {self.model.__name__}.family is "
                             f"{getattr(self.model, 'family', None)!r}")
        bad = {a: k for a, k in self.decoding.items() if a not in self.applications or k not in DECODING_KINDS}
        if bad:
            raise ValueError(f"family record {self.name!r}: decoding {bad} names an application outside "
                             f"{self.applications} or a kind outside {DECODING_KINDS}")

    @property
    def applications(self) -> tuple[str, ...]:
        return self.model.applications

    def build(self, config, options: Options) -> nn.Module:
        return self.model(config, options=options)


_ENCODER_DECODING = {"lm": CAUSAL, "unilm": PREFIX}

REGISTRY: dict[str, Family] = {f.name: f for f in (
    Family("bert", BERT, TransformerConfig, BERT.parse_config, BERT_REFUSED, BERT.hf_config_fields,
           model_types=("bert",), weight_map=BERT.weight_map,
           bert4keras=Bert4kerasNames(("bert", "roberta"), bert_tf_rules, BERT4KERAS_OPTIONAL),
           tokenizer=Tokenizer.from_pretrained, decoding=_ENCODER_DECODING),
    Family("roformer", RoFormer, TransformerConfig, RoFormer.parse_config, BERT_REFUSED, RoFormer.hf_config_fields,
           model_types=("roformer",), weight_map=RoFormer.weight_map,
           bert4keras=Bert4kerasNames(("roformer",), bert_tf_rules, BERT4KERAS_OPTIONAL),
           tokenizer=Tokenizer.from_pretrained, decoding=_ENCODER_DECODING),
    Family("roformer_v2", RoFormerV2, TransformerConfig, RoFormerV2.parse_config, BERT_REFUSED,
           RoFormerV2.hf_config_fields, model_types=("roformer_v2",), weight_map=RoFormerV2.weight_map,
           bert4keras=Bert4kerasNames(("roformer_v2",), bert_tf_rules, BERT4KERAS_OPTIONAL),
           tokenizer=Tokenizer.from_pretrained, decoding=_ENCODER_DECODING),
    Family("gpt", GPT, TransformerConfig, GPT.parse_config, GPT_REFUSED, GPT.hf_config_fields,
           model_types=("gpt2", "gpt"), weight_map=GPT.weight_map,
           bert4keras=Bert4kerasNames(("gpt",), gpt_tf_rules, BERT4KERAS_OPTIONAL),
           tokenizer=load_tokenizer, decoding={"lm": CAUSAL}),
    Family("t5", T5, T5Config, T5.parse_config, T5_REFUSED, T5.hf_config_fields,
           model_types=("t5", "mt5"), weight_map=T5.weight_map,
           bert4keras=Bert4kerasNames(("t5.1.1", "mt5.1.1"), t5_tf_rules),
           tokenizer=folder_tokenizer, decoding={"seq2seq": ENCODER_DECODER}),
    # GPT2-ML (bert4keras gpt2_ml) and GAU-α (the GAU-α release on bert4keras)
    Family("gpt2_ml", GPT2ML, TransformerConfig, GPT2ML.parse_config, GPT2_ML_REFUSED, GPT2ML.hf_config_fields,
           model_types=("gpt2_ml",), weight_map=GPT2ML.weight_map,
           bert4keras=Bert4kerasNames(("gpt2_ml",), gpt2_ml_tf_rules), tokenizer=load_tokenizer,
           decoding={"lm": CAUSAL}),
    Family("gau_alpha", GAUAlpha, GAUConfig, GAUAlpha.parse_config, GAU_REFUSED, GAUAlpha.hf_config_fields,
           model_types=("gau_alpha",), weight_map=GAUAlpha.weight_map,
           bert4keras=Bert4kerasNames(("gau_alpha",), gau_tf_rules, BERT4KERAS_OPTIONAL), tokenizer=load_tokenizer,
           decoding=_ENCODER_DECODING),
    # ALBERT (bert4keras's albert and albert_unshared), NEZHA, ELECTRA
    Family("albert", albert.ALBERT, albert.AlbertConfig, albert.ALBERT.parse_config, albert.ALBERT.refused,
           albert.ALBERT.hf_config_fields, model_types=("albert",), weight_map=albert.ALBERT.weight_map,
           bert4keras=albert.BERT4KERAS_NAMES, tokenizer=Tokenizer.from_pretrained, decoding=_ENCODER_DECODING),
    Family("nezha", nezha.NEZHA, nezha.NezhaConfig, nezha.NEZHA.parse_config, nezha.REFUSED,
           nezha.NEZHA.hf_config_fields, model_types=("nezha",), weight_map=nezha.NEZHA.weight_map,
           bert4keras=nezha.BERT4KERAS_NAMES, tokenizer=Tokenizer.from_pretrained, decoding=_ENCODER_DECODING),
    Family("electra", electra.ELECTRA, TransformerConfig, electra.ELECTRA.parse_config, electra.ELECTRA.refused,
           electra.ELECTRA.hf_config_fields, model_types=("electra",), weight_map=electra.ELECTRA.weight_map,
           bert4keras=electra.BERT4KERAS_NAMES, tokenizer=Tokenizer.from_pretrained, decoding={}),
)}
# other names of a family: bert4keras's roberta is BERT (Chinese RoBERTa-wwm checkpoints have BERT's layout)
ALIASES = {"roberta": "bert"}
# HF model_type values that name another computation than the kexue family of the same name
FOREIGN_MODEL_TYPES = {"roberta": "transformers' RoBERTa offsets position ids by padding_idx + 1, which BERT does "
                                  "not; Chinese RoBERTa-wwm checkpoints are BERT: set model_type 'bert'"}

# Tables read off the records (the names kexue.models.config held before the records did)
FAMILIES = {name: f.model for name, f in REGISTRY.items()}
FAMILY_NAMES = tuple(REGISTRY)
APPLICATIONS = {name: f.applications for name, f in REGISTRY.items()}
REFUSED = {name: f.refused for name, f in REGISTRY.items()}
# HF model_type -> family (kexue_* are written for variants transformers cannot compute)
MODEL_TYPES = {**{t: f.name for f in REGISTRY.values() for t in f.model_types},
               **{f"kexue_{name}": name for name in REGISTRY}}


def _family(name: str) -> Family:
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def _family_name(d: dict[str, Any], path=None) -> str:
    """The family a config dict describes: its kexue block, else its HF ``model_type``."""
    block = d.get("kexue")
    if isinstance(block, dict) and block.get("family"):
        return block["family"]
    model_type = d.get("model_type", "bert")
    if model_type in FOREIGN_MODEL_TYPES:
        raise ConfigError(f"config field 'model_type'={model_type!r}{' in ' + str(path) if path else ''} is not "
                          f"supported: {FOREIGN_MODEL_TYPES[model_type]}")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"config field 'model_type'={model_type!r}{' in ' + str(path) if path else ''} is not a "
                          f"kexue family; known: {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def bert4keras_folder_hint(path: str | Path) -> str | None:
    """For a folder holding a bert4keras TF checkpoint (``*config*.json`` + ``*.index``) and no ``config.json``:
    one line naming the command that converts it (``--model`` read off the family records' marks when they
    identify one family); None for any other path."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "config.json").exists():
        return None
    index = sorted(folder.glob("*.index"))
    configs = sorted(p for p in folder.glob("*.json") if "config" in p.name)
    if not index or not configs:
        return None
    prefix = index[0].with_suffix("")
    try:
        b4k = json.loads(configs[0].read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable: its keys name no model
        b4k = {}
    try:
        names = [name for name, _ in list_variables(prefix)]
    except (OSError, ValueError):
        names = []
    found = [f for f in REGISTRY.values() if isinstance(b4k, dict) and f.bert4keras.identified_by(b4k, names)]
    model = found[0].bert4keras.models[0] if len(found) == 1 else \
        "{" + ",".join(m for f in REGISTRY.values() for m in f.bert4keras.models) + "}"
    return (f"{folder} holds a bert4keras TF checkpoint ({configs[0].name}, {index[0].name}), not a kexue / HF "
            f"folder: convert it first with `kexue convert bert4keras --config {configs[0]} --checkpoint {prefix} "
            f"--model {model} --out DIR`")


def family_of(model: nn.Module) -> Family:
    """The record of a built model's family (its ``options.family``)."""
    options = getattr(model, "options", None)
    if not isinstance(options, Options):
        raise ValueError(f"{type(model).__name__} is not a kexue model (it has no kexue options)")
    return _family(options.family)


def decoding_kind(model: nn.Module) -> str | None:
    """How generation decodes ``model``: :data:`CAUSAL`, :data:`PREFIX` or :data:`ENCODER_DECODER`, read
    from its family record for its application; ``None`` when it does not generate (an encoder, or not a
    kexue model)."""
    options = getattr(model, "options", None)
    if not isinstance(options, Options) or options.family not in REGISTRY:
        return None
    return REGISTRY[options.family].decoding.get(options.application)


def hf_config(model: nn.Module) -> dict[str, Any]:
    """The model's ``config.json``: HF fields, ``architectures`` and the ``"kexue"`` block."""
    fam = family_of(model)
    d = fam.config_to_hf(model)
    d["architectures"] = [model.hf_architectures[1 if getattr(model, "with_mlm", True) else 0]]
    d["kexue"] = model.options.to_dict(fam.model.option_keys)
    return d


def build_model(
    config: TransformerConfig | T5Config | dict[str, Any] | str | Path | None = None,
    checkpoint: str | Path | None = None,
    family: str | None = None,
    application: str | None = None,
    strict: bool = True,
    keep_tokens: list[int] | None = None,
    compound_tokens: list | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model of any family and, given ``checkpoint`` (an HF-layout folder, or a hub id
    ``org/name[@revision]`` fetched through :mod:`kexue.hub`), load its weights.

    ``config``: a ``config.json`` path / folder, a dict (HF fields, optionally a ``"kexue"`` block;
    option keys may also sit at the top level), a config object, or ``None`` to read the checkpoint's.
    ``family`` defaults to the kexue block's, else the HF ``model_type``. ``application``:
    ``encoder`` | ``lm`` | ``unilm`` (BERT family), ``lm`` (GPT), ``seq2seq`` (T5); lm / unilm always
    build the output head. ``options``: the kexue block's keys (:class:`Options`), overriding the
    file's (``None`` leaves the file's value). ``keep_tokens`` / ``compound_tokens``: bert4keras's, applied
    to the loaded weights (:mod:`kexue.models.vocab`: rows of every vocabulary-indexed tensor gathered, or
    averaged into new tokens; the model's ``vocab_size`` becomes theirs).
    """
    path = None
    # a hub id (org/name[@revision]) becomes its cached snapshot folder; local paths stay as they are
    checkpoint = resolve(checkpoint) if isinstance(checkpoint, str) else checkpoint
    config = resolve(config) if isinstance(config, str) else config
    family = ALIASES.get(family, family)
    if config is None:
        if checkpoint is None:
            raise ValueError("build_model needs a config or a checkpoint folder holding config.json")
        config = checkpoint
    config_classes = tuple({f.config for f in REGISTRY.values()})
    if isinstance(config, (str, Path)):
        hint = bert4keras_folder_hint(config)
        if hint:
            raise FileNotFoundError(hint)
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        d = read_config(path)
    elif isinstance(config, dict):
        d = dict(config)
        block = dict(d.get("kexue") or {})
        for k in list(d):  # convenience: option keys at the top level of an in-code dict
            if k in Options.TYPES and k not in TransformerConfig.TYPES and k != "family":
                block.setdefault(k, d.pop(k))
        d["kexue"] = block
    elif isinstance(config, config_classes):
        d = None
    else:
        raise TypeError(f"config must be a path, a dict or a config object, not {type(config).__name__}")

    if d is not None:
        block = d.get("kexue") or {}
        if not isinstance(block, dict):
            raise ConfigError(f"the 'kexue' block{' in ' + str(path) if path else ''} must be a JSON object")
        found = _family_name(d, path)
        if family is not None and "family" in block and block["family"] != family:
            raise ConfigError(f"family={family!r} contradicts the config's kexue.family={block['family']!r}"
                              f"{' in ' + str(path) if path else ''}")
        fam = _family(family or found)
        cfg = fam.parse_config(d, path)
    else:
        block = {}
        fam = _family(family or MODEL_TYPES.get(config.model_type, config.model_type))
        cfg = config
        if not isinstance(cfg, fam.config):
            raise ConfigError(f"a {type(cfg).__name__} cannot build family {fam.name}")
        if isinstance(cfg, TransformerConfig):
            cfg.model_type = fam.name
    # an option passed as None means "not given": the file's value (or the default) stands
    merged = {**block, **{k: v for k, v in options.items() if v is not None}, "family": fam.name}
    if application is not None:
        merged["application"] = application
    merged.setdefault("application", fam.model.default_application)
    opts = Options.from_dict(merged, path)
    fam.model.check_options(opts, path)
    model = fam.build(cfg, opts)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict)
    if keep_tokens is not None or compound_tokens is not None:
        keep = parse_keep_tokens(list(keep_tokens)) if keep_tokens is not None else None
        compound = None
        if compound_tokens is not None:
            compound = [c if isinstance(c, Compound) else parse_compound_tokens([c])[0] for c in compound_tokens]
        model = trim_model(model, keep, compound, fam.build)
    return model


def from_state(family: str, config: dict[str, Any], state: dict[str, Tensor], strict: bool = True,
               **options: Any) -> nn.Module:
    """Build a model from an HF config dict and an HF-named state dict (e.g. ``hf_model.state_dict()``)."""
    model = build_model(config, family=family, **options)
    load_state(model, state, strict=strict)
    return model


def from_hf_gpt2(state_or_path: dict[str, Tensor] | str | Path, config: dict | None = None) -> GPT:
    """A GPT from an HF GPT-2 state dict (with ``config`` as HF ``GPT2Config`` dict) or directory."""
    if not isinstance(state_or_path, dict):
        return build_model(checkpoint=state_or_path, family="gpt")
    return from_state("gpt", dict(config or {}, model_type="gpt2"), state_or_path)


def t5_from_pretrained(path: str | Path) -> T5:
    """Load an HF T5 / mT5 / T5 PEGASUS directory (``config.json`` + weights, sharded or not)."""
    return build_model(checkpoint=path, family="t5")


# The constructors earlier releases had on the model classes, kept as aliases. They are attached here,
# on top of the model files, so a model file never imports the registry.
GPT.from_hf_gpt2 = staticmethod(from_hf_gpt2)
T5.from_pretrained = staticmethod(t5_from_pretrained)

__all__ = ["ALIASES", "APPLICATIONS", "CAUSAL", "DECODING_KINDS", "ENCODER_DECODER", "FAMILIES", "FAMILY_NAMES", "Family",
           "LoadReport", "MODEL_TYPES", "PREFIX", "REFUSED", "REGISTRY", "bert4keras_folder_hint", "build_model", "decoding_kind",
           "family_of", "from_hf_gpt2", "from_state", "hf_config", "t5_from_pretrained"]
