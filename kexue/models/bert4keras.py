"""bert4keras TF checkpoints -> kexue (HF-layout folders): ``kexue convert bert4keras``.

    W_torch = K_kerasᵀ  (a Keras Dense kernel is [in, out], a torch Linear weight is [out, in])

bert4keras (《bert4keras：在Keras下的BERT实现》) saves and loads the original TF checkpoint layouts
(Google BERT, RoFormer, GPT, mesh-TF T5); SimBERT, RoFormer-Sim, RoFormer-v2, T5 PEGASUS and the
Chinese BERTs are released that way. Each bert4keras model maps onto a kexue family:

    bert          -> bert           (bert/...: post-norm, learned positions, LayerNorm ε = 1e-12)
    roformer      -> roformer       (bert/... names, no position table; bert4keras's norms use ε = 1e-7)
    roformer_v2   -> roformer_v2    (no biases, norms are RMS without gain, ε = 1e-7)
    gpt           -> gpt, pre_norm=false, final_norm=false
                                    (gpt/...: BERT layers with the causal mask, embeddings summed without
                                    a norm, LM head tied to the embedding without bias: GPT-1 / CDial-GPT)
    t5.1.1        -> t5 (T5 v1.1)   (mesh-TF names; mt5.1.1 the same with rms_norm)
    gpt2_ml       -> gpt2_ml        (newslm/...: norms after the embeddings and around the FFN, ε = 1e-5)
    gau_alpha     -> gau_alpha      (GAU_alpha/encoder/layer_i/gau/...: RoFormer-v2 with GAU layers, ε = 1e-7)
    roberta       -> bert           (bert4keras's name for the BERT computation: Chinese RoBERTa-wwm)
    albert        -> albert         (bert/encoder/transformer/group_0/inner_group_0/...: one shared block)
    albert_unshared -> albert, num_hidden_groups = num_hidden_layers (every layer its own block)
    nezha         -> nezha          (bert/... names, no position table, relative positions M = 64, ε = 1e-7)
    electra       -> electra        (electra/..., electra/embeddings_project, discriminator_predictions/...)

``keep_tokens`` / ``compound_tokens`` (JSON files, :mod:`kexue.models.vocab`) trim or extend the
vocabulary exactly as bert4keras's ``load_embeddings`` does, on every vocabulary-indexed tensor; the
vocabulary written beside the weights is then the trimmed one, and ``decoder_start_id`` / ``eos_id``
(ids of the checkpoint's vocabulary) move to their new ids.

Nothing in ``bert_config.json`` is lost: the fields bert4keras reads are translated (the dropout rates
included), its build options (``with_pool``, ``with_mlm``, ``with_discriminator``) become kexue options,
the rest is written to ``config.json`` as it is; what kexue cannot compute (``with_nsp``,
``residual_attention_scores`` ...) is refused by name. A checkpoint whose config keys or variables are
another family's (``Bert4kerasNames.marks``: NEZHA's ``max_relative_position``, ALBERT's shared
``group_0/inner_group_0`` variables, ELECTRA's ``electra/...``) is refused with the reason and the
``--model`` that converts it.

Two bert4keras conventions are kept exactly: its T5 decoder multiplies the output by d^-1/2 before
the untied head (``scale_decoder_outputs``), and its cross-attention adds the decoder's
relative-position bias (``cross_position_bias``, bert4keras's default). Conditional LayerNorm
weights, which bert4keras's own mapping does not save, are read as ``<norm>/hidden_dense/kernel``,
``<norm>/beta_dense/kernel`` and ``<norm>/gamma_dense/kernel``. The TF name of every kexue tensor is the
family record's (``Family.bert4keras``: rules kept in each model file).

Reading needs no TensorFlow: ``kexue.models.tf_checkpoint`` reads the tensor-bundle format itself.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from kexue.io import read_utf8
from kexue.models.checkpoints import save_pretrained
from kexue.models.family import REGISTRY, build_model
from kexue.models.vocab import read_token_list, trim_model, trim_tokens
from kexue.models.weights import CheckpointError, LoadReport, check_fit

# bert4keras model= name -> kexue family, read off the family records (their ``bert4keras`` names)
MODELS = {model: name for name, family in REGISTRY.items() for model in family.bert4keras.models}
# bert4keras's LayerNormalization falls back to Keras's epsilon (1e-7) where a model passes none.
KERAS_EPSILON = 1e-7
# bert4keras activation names -> kexue / HF names ('gelu' is the erf form unless set_gelu('tanh')).
ACTIVATIONS = {"gelu": "gelu", "gelu_erf": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "swish": "swish",
               "tanh": "tanh", "linear": "linear"}
# config.json keys that bert4keras passes to the model and that kexue cannot honour.
REFUSED = ("attention_head_size", "attention_key_size", "residual_attention_scores", "shared_segment_embeddings",
           "keep_tokens", "compound_tokens", "custom_position_ids", "with_nsp")
WHY = {"with_nsp": "kexue models have no next-sentence head; convert with --with-pool and put a 2-way classifier "
                   "on the pooled vector (the checkpoint's cls/seq_relationship weights are not read)"}
# config.json keys the converter translates (the others are carried into config.json as they are)
TRANSLATED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "max_position", "max_position_embeddings", "segment_vocab_size", "type_vocab_size",
              "dropout_rate", "hidden_dropout_prob", "attention_dropout_rate", "attention_probs_dropout_prob",
              "embedding_size", "hierarchical_position", "with_pool", "with_mlm", "with_discriminator",
              "layer_norm_eps", "tie_word_embeddings", "model_type") + REFUSED
# families whose bert4keras layers use Keras's LayerNormalization epsilon (the others pass 1e-12)
KERAS_NORMS = ("roformer", "roformer_v2", "nezha")
# Variables a checkpoint may carry that no kexue model reads: optimizer slots and step counters.
IGNORED = (r".*/adam_[mv]$", r".*/Adam(_1)?$", r"global_step", r"bad_steps", r"good_steps", r"loss_scale")

def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint (``prefix`` as given to ``Saver.save``, or its folder), by name,
    read without TensorFlow (``kexue.models.tf_checkpoint``, CRC-checked); bfloat16 ones widened to
    float32 (exact), as torch takes no ml_dtypes arrays."""
    from kexue.models.tf_checkpoint import read_tf_checkpoint as read

    variables = read(prefix)
    return {name: value.astype(np.float32) if value.dtype.name == "bfloat16" else value
            for name, value in variables.items()}


def _dropouts(b4k: dict) -> tuple[float, float]:
    """(hidden, attention) dropout rates as bert4keras reads them: ``dropout_rate`` else ``hidden_dropout_prob``,
    ``attention_dropout_rate`` else ``attention_probs_dropout_prob``, absent = 0."""
    hidden = b4k["dropout_rate"] if "dropout_rate" in b4k else b4k.get("hidden_dropout_prob")
    attention = b4k["attention_dropout_rate"] if "attention_dropout_rate" in b4k \
        else b4k.get("attention_probs_dropout_prob")
    return float(hidden or 0), float(attention or 0)


def _file_options(b4k: dict, model: str) -> dict:
    """The build options a bert4keras config file may hold (bert4keras passes every key to the model)."""
    options = {}
    if b4k.get("with_pool"):
        options["with_pool"] = True
        if b4k["with_pool"] is not True:
            options["pool_act"] = b4k["with_pool"]
    if b4k.get("with_mlm"):  # an activation name changes only what bert4keras applies to the logits
        options["with_mlm"] = True
    if b4k.get("with_discriminator"):
        if MODELS[model] != "electra":
            raise ValueError(f"bert4keras config field 'with_discriminator' belongs to electra, not {model}")
        options["with_discriminator"] = True
    return options


def convert_config(b4k: dict, model: str) -> tuple[dict, dict]:
    """bert4keras ``config.json`` -> (HF config dict, kexue options it implies). Every field is carried:
    the ones bert4keras reads are translated (sizes, ``max_position``, ``segment_vocab_size``, the dropout
    rates, ``embedding_size`` ...), its build options become kexue options, the others (``directionality``,
    ``initializer_range``, NEZHA's ``max_relative_position`` ...) are written to ``config.json`` as they are.
    A field kexue cannot honour is refused by name."""
    if model not in MODELS:
        raise ValueError(f"unknown bert4keras model {model!r}; known: {', '.join(MODELS)}")
    for key in REFUSED:
        if b4k.get(key) not in (None, False, 0):
            if key in ("attention_head_size", "attention_key_size") and \
                    b4k[key] == b4k["hidden_size"] // b4k["num_attention_heads"]:
                continue
            if key == "attention_key_size" and MODELS[model] == "gau_alpha":
                continue  # GAU-α's s, a config field of its own
            hint = f" in config.json; pass it as a file: --{key.replace('_', '-')} FILE" \
                if key in ("keep_tokens", "compound_tokens") else (f": {WHY[key]}" if key in WHY else "")
            raise ValueError(f"bert4keras config field {key!r} is not supported by kexue{hint}")
    act = b4k.get("hidden_act", "gelu")
    acts = act if isinstance(act, list) else [act]
    for a in acts:
        if a not in ACTIVATIONS:
            raise ValueError(f"bert4keras hidden_act {a!r} is not supported; known: {sorted(ACTIVATIONS)}")
    family = MODELS[model]
    options = _file_options(b4k, model)
    carried = {k: v for k, v in b4k.items() if k not in TRANSLATED}
    size = dict(vocab_size=b4k["vocab_size"], hidden_size=b4k["hidden_size"],
                num_hidden_layers=b4k["num_hidden_layers"], num_attention_heads=b4k["num_attention_heads"],
                intermediate_size=b4k["intermediate_size"])
    hidden_dropout, attention_dropout = _dropouts(b4k)
    if family == "t5":
        if b4k.get("embedding_size") not in (None, b4k["hidden_size"]):
            raise ValueError("bert4keras config field 'embedding_size' different from hidden_size is not supported for T5")
        gated = len(acts) == 2
        if len(acts) > 2 or (gated and acts[1] != "linear"):
            raise ValueError(f"bert4keras T5 hidden_act {act!r}: expected one activation or [act, 'linear']")
        name = ACTIVATIONS[acts[0]]
        config = {**carried, "model_type": "t5", "vocab_size": size["vocab_size"], "d_model": size["hidden_size"],
                  "d_kv": size["hidden_size"] // size["num_attention_heads"], "d_ff": size["intermediate_size"],
                  "num_layers": size["num_hidden_layers"], "num_heads": size["num_attention_heads"],
                  "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
                  "layer_norm_epsilon": 1e-6, "dropout_rate": hidden_dropout, "tie_word_embeddings": False,
                  "scale_decoder_outputs": True,  # bert4keras scales by d^-1/2 before its untied head too
                  "feed_forward_proj": ("gated-" if gated else "") + ("gelu" if name == "gelu_new" else name),
                  "dense_act_fn": name, "is_encoder_decoder": True}
        return config, {**options, "cross_position_bias": True}
    if len(acts) != 1:
        raise ValueError(f"bert4keras hidden_act {act!r}: a list (gated FFN) is only supported for T5")
    if family in ("gpt2_ml", "gau_alpha") and b4k.get("embedding_size") not in (None, b4k["hidden_size"]):
        raise ValueError(f"bert4keras config field 'embedding_size' != hidden_size is not supported for {model}")
    if family == "gpt2_ml":  # token ids only, every norm ε = 1e-5
        return {**carried, **size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]], "type_vocab_size": 0,
                "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
                "layer_norm_eps": 1e-5, "hidden_dropout_prob": hidden_dropout,
                "attention_probs_dropout_prob": attention_dropout}, options
    if family == "gau_alpha":  # single-head GAU of key size s, Keras's ε
        config = {**carried, **size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]],
                  "type_vocab_size": b4k.get("segment_vocab_size", b4k.get("type_vocab_size", 2)),
                  "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
                  "layer_norm_eps": KERAS_EPSILON, "hidden_dropout_prob": hidden_dropout,
                  "attention_probs_dropout_prob": attention_dropout}
        if b4k.get("attention_key_size"):
            config["attention_key_size"] = b4k["attention_key_size"]
        return config, options
    config = {**carried, **size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]],
              "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
              "type_vocab_size": b4k.get("segment_vocab_size", b4k.get("type_vocab_size", 2)),
              "layer_norm_eps": KERAS_EPSILON if family in KERAS_NORMS else 1e-12,
              "hidden_dropout_prob": hidden_dropout, "attention_probs_dropout_prob": attention_dropout,
              "tie_word_embeddings": True}  # bert4keras's MLM / LM heads always read the token embedding
    embedding = b4k.get("embedding_size")
    if embedding not in (None, b4k["hidden_size"]):
        if family in ("roformer_v2", "gpt"):
            raise ValueError(f"bert4keras config field 'embedding_size' != hidden_size is not supported for {model}")
        config["embedding_size"] = embedding
    elif family in ("albert", "electra"):  # their HF configs default to 128: say it
        config["embedding_size"] = b4k["hidden_size"]
    if family == "albert":
        for key in ("num_hidden_groups", "inner_group_num"):
            if b4k.get(key, 1) != 1:
                raise ValueError(f"bert4keras config field {key!r}={b4k[key]!r}: bert4keras builds ALBERT with one "
                                 "shared block (1)")
        # albert: one block shared by every layer; albert_unshared: every layer its own block
        config["num_hidden_groups"] = b4k["num_hidden_layers"] if model == "albert_unshared" else 1
        config["inner_group_num"] = 1
    if family == "electra":
        for key in ("with_pool", "with_mlm"):
            if b4k.get(key):
                raise ValueError(f"bert4keras config field {key!r}: bert4keras's electra has none (it deletes the "
                                 "argument); its head is with_discriminator")
    if family == "gpt":
        options.update(pre_norm=False, final_norm=False)
    return config, options


def identify(b4k: dict, variables, model: str, source: str) -> None:
    """Refuse a checkpoint whose config keys or variables are another family's (``Bert4kerasNames.marks``),
    naming the reason and the ``--model`` that converts it."""
    family = MODELS[model]
    for name, record in REGISTRY.items():
        why = None if name == family else record.bert4keras.identified_by(b4k, variables)
        if why:
            raise ValueError(f"{source} is a {name} checkpoint, not {model}'s ({family}): {why}; convert it with "
                             f"--model {record.bert4keras.models[0]}")


def state_from_tf(model: torch.nn.Module, variables: dict[str, np.ndarray], bert4keras_model: str,
                  source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The kexue state dict of ``model`` read from bert4keras ``variables``; raises one
    :class:`~kexue.models.weights.CheckpointError` naming every missing, unexpected or mis-shaped variable."""
    names = REGISTRY[MODELS[bert4keras_model]].bert4keras
    rules = names.rules(bert4keras_model)
    state, used, missing, mismatched, picks = {}, set(), [], [], {}
    for name, param in model.state_dict().items():
        for ours, theirs in rules:
            m = re.fullmatch(ours, name)
            if m:
                candidates = [t.format(*(int(g) for g in m.groups()))
                              for t in ((theirs,) if isinstance(theirs, str) else theirs)]
                pick = next((i for i, c in enumerate(candidates) if c in variables), 0)
                tf_name = candidates[pick]
                if len(candidates) > 1:
                    picks.setdefault(pick, []).append(tf_name)
                break
        else:
            raise CheckpointError(f"no bert4keras variable is known for kexue weight {name!r}")
        if tf_name not in variables:
            missing.append(tf_name)
            continue
        used.add(tf_name)
        value = torch.from_numpy(np.ascontiguousarray(variables[tf_name])).float()
        if value.dim() == 2 and not name.endswith(("token.weight", "segment.weight", "position.weight",
                                                    "shared.weight")):
            value = value.t()  # Keras kernels [in, out]; mesh-TF relative biases [heads, buckets]
        if tuple(value.shape) != tuple(param.shape):
            mismatched.append(f"{tf_name} {list(value.shape)} vs {name} {list(param.shape)}")
            continue
        state[name] = value.contiguous()
    if len(picks) > 1:  # some tensors read their own copies, others the shared variable: a mixed checkpoint
        raise CheckpointError(f"{source} holds per-layer copies for some tensors only (e.g. {picks[0][0]!r}) and not "
                              f"for others (e.g. {max(picks.items())[1][0]!r} is read instead of its copy)")
    unexpected = [v for v in variables if v not in used
                  and not any(re.fullmatch(p, v) for p in IGNORED + names.optional)]
    check_fit(LoadReport(sorted(missing), sorted(unexpected), sorted(mismatched)), source,
              f"bert4keras model {bert4keras_model!r}")
    return state


def complete_variables(variables: dict[str, np.ndarray], config: dict, family: str) -> dict[str, np.ndarray]:
    """What bert4keras computes without a variable: its ALBERT with embedding_size = hidden_size has no
    Embedding-Mapping, transformers' (and kexue's) always maps E -> H: the identity, with a zero bias."""
    mapping = "bert/encoder/embedding_hidden_mapping_in"
    if family == "albert" and config["embedding_size"] == config["hidden_size"] and f"{mapping}/kernel" not in variables:
        h = config["hidden_size"]
        variables = {**variables, f"{mapping}/kernel": np.eye(h, dtype=np.float32),
                     f"{mapping}/bias": np.zeros(h, dtype=np.float32)}
    return variables


def _cond_options(variables: dict[str, np.ndarray]) -> dict:
    """Conditional LayerNorm sizes, read off the first conditional norm's kernels."""
    gamma = sorted(v for v in variables if v.endswith("/gamma_dense/kernel"))
    if not gamma:
        return {}
    width = variables[gamma[0]].shape[0]
    hidden = [v for v in variables if v.endswith("/hidden_dense/kernel")]
    if hidden:
        return {"cond_dim": int(variables[sorted(hidden)[0]].shape[0]), "cond_hidden": int(width)}
    return {"cond_dim": int(width)}


def convert(config_path: str | Path, checkpoint: str | Path, model: str, out: str | Path,
            application: str = "encoder", vocab: str | Path | None = None, lowercase: bool = True,
            decoder_start_id: int | None = None, eos_id: int | None = None, keep_tokens: str | Path | None = None,
            compound_tokens: str | Path | None = None, **options) -> Path:
    """Convert a bert4keras checkpoint into an HF-layout folder that ``build_model(checkpoint=out)`` loads.
    ``options`` are kexue block keys (with_pool, with_mlm, hierarchical_alpha, cond_hidden_act, ...);
    ``decoder_start_id`` / ``eos_id``: T5's generation tokens (not stored in a bert4keras checkpoint);
    ``keep_tokens`` / ``compound_tokens``: JSON files (:mod:`kexue.models.vocab`), applied as bert4keras does."""
    try:
        b4k = json.loads(read_utf8(config_path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON: {e}") from None
    if options.get("with_nsp"):
        raise ValueError(f"bert4keras option 'with_nsp' is not supported by kexue: {WHY['with_nsp']}")
    config, implied = convert_config(b4k, model)
    keep = read_token_list(keep_tokens, "keep_tokens") if keep_tokens is not None else None
    compound = read_token_list(compound_tokens, "compound_tokens") if compound_tokens is not None else None
    family = MODELS[model]
    if vocab is not None:  # checked before any weight is read: the vocabulary must be this model's
        from kexue.text.tokenizer import load_vocab

        rows, want = len(load_vocab(vocab)), int(config["vocab_size"])
        if rows != want:
            raise ValueError(f"--vocab {vocab}: {rows} tokens, but {config_path} gives vocab_size {want} (the "
                             "checkpoint's embedding rows): not this model's vocabulary")
    if family == "electra" and (options.get("with_mlm") or options.get("with_pool")):
        raise ValueError("bert4keras's electra has no MLM head or pooler (it deletes with_mlm / with_pool); its head is "
                         "--with-discriminator")
    for name, value in (("decoder_start_token_id", decoder_start_id), ("eos_token_id", eos_id)):
        if value is not None:
            if family != "t5":
                raise ValueError(f"{name} is a T5 setting; {model} has none")
            config[name] = value
    from kexue.models.tf_checkpoint import list_variables

    identify(b4k, [name for name, _ in list_variables(checkpoint)], model, str(config_path))
    variables = complete_variables(read_tf_checkpoint(checkpoint), config, family)
    if b4k.get("hierarchical_position") and options.get("hierarchical_alpha") is None:
        h = b4k["hierarchical_position"]
        options["hierarchical_alpha"] = 0.4 if h is True else float(h)
    if family != "t5":
        if application in ("lm", "unilm"):
            options["with_mlm"] = True  # bert4keras's LM / UniLM always carry the MLM head
        if family in ("gpt", "gpt2_ml"):
            application = "lm"
    options = {**implied, **_cond_options(variables), **{k: v for k, v in options.items() if v is not None}}
    kexue_model = build_model(config=config, family=family, application=None if family == "t5" else application,
                              **options)
    if family == "t5":
        kexue_model.untie_head()  # bert4keras's t5.1.1 has its own decoder/logits/kernel
    kexue_model.load_state_dict(state_from_tf(kexue_model, variables, model, str(checkpoint)), strict=True)
    tokenizer = None
    if vocab is not None:
        from kexue.text.tokenizer import Tokenizer, load_vocab

        tokens = load_vocab(vocab)
        if keep is not None or compound is not None:
            tokens = trim_tokens(tokens, keep, compound)
        tokenizer = Tokenizer(tokens, lowercase=lowercase)
    if keep is not None or compound is not None:
        kexue_model = trim_model(kexue_model, keep, compound, REGISTRY[family].build)
    return save_pretrained(kexue_model, out, tokenizer=tokenizer)
