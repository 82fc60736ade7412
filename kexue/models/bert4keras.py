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

``keep_tokens`` / ``compound_tokens`` (JSON files, :mod:`kexue.models.vocab`) trim or extend the
vocabulary exactly as bert4keras's ``load_embeddings`` does, on every vocabulary-indexed tensor; the
vocabulary written beside the weights is then the trimmed one, and ``decoder_start_id`` / ``eos_id``
(ids of the checkpoint's vocabulary) move to their new ids.

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
           "keep_tokens", "compound_tokens", "custom_position_ids")
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


def convert_config(b4k: dict, model: str) -> tuple[dict, dict]:
    """bert4keras ``config.json`` -> (HF config dict, kexue options it implies)."""
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
                if key in ("keep_tokens", "compound_tokens") else ""
            raise ValueError(f"bert4keras config field {key!r} is not supported by kexue{hint}")
    act = b4k.get("hidden_act", "gelu")
    acts = act if isinstance(act, list) else [act]
    for a in acts:
        if a not in ACTIVATIONS:
            raise ValueError(f"bert4keras hidden_act {a!r} is not supported; known: {sorted(ACTIVATIONS)}")
    size = dict(vocab_size=b4k["vocab_size"], hidden_size=b4k["hidden_size"],
                num_hidden_layers=b4k["num_hidden_layers"], num_attention_heads=b4k["num_attention_heads"],
                intermediate_size=b4k["intermediate_size"])
    family = MODELS[model]
    if family == "t5":
        if b4k.get("embedding_size") not in (None, b4k["hidden_size"]):
            raise ValueError("bert4keras config field 'embedding_size' different from hidden_size is not supported for T5")
        gated = len(acts) == 2
        if len(acts) > 2 or (gated and acts[1] != "linear"):
            raise ValueError(f"bert4keras T5 hidden_act {act!r}: expected one activation or [act, 'linear']")
        name = ACTIVATIONS[acts[0]]
        config = {"model_type": "t5", "vocab_size": size["vocab_size"], "d_model": size["hidden_size"],
                  "d_kv": size["hidden_size"] // size["num_attention_heads"], "d_ff": size["intermediate_size"],
                  "num_layers": size["num_hidden_layers"], "num_heads": size["num_attention_heads"],
                  "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
                  "layer_norm_epsilon": 1e-6, "dropout_rate": 0.0, "tie_word_embeddings": False,
                  "scale_decoder_outputs": True,  # bert4keras scales by d^-1/2 before its untied head too
                  "feed_forward_proj": ("gated-" if gated else "") + ("gelu" if name == "gelu_new" else name),
                  "dense_act_fn": name, "is_encoder_decoder": True}
        return config, {"cross_position_bias": True}
    if len(acts) != 1:
        raise ValueError(f"bert4keras hidden_act {act!r}: a list (gated FFN) is only supported for T5")
    if family in ("gpt2_ml", "gau_alpha") and b4k.get("embedding_size") not in (None, b4k["hidden_size"]):
        raise ValueError(f"bert4keras config field 'embedding_size' != hidden_size is not supported for {model}")
    if family == "gpt2_ml":  # token ids only, every norm ε = 1e-5
        return {**size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]], "type_vocab_size": 0,
                "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
                "layer_norm_eps": 1e-5, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, {}
    if family == "gau_alpha":  # single-head GAU of key size s, Keras's ε
        config = {**size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]],
                  "type_vocab_size": b4k.get("segment_vocab_size", b4k.get("type_vocab_size", 2)),
                  "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
                  "layer_norm_eps": KERAS_EPSILON, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        if b4k.get("attention_key_size"):
            config["attention_key_size"] = b4k["attention_key_size"]
        return config, {}
    config = {**size, "model_type": family, "hidden_act": ACTIVATIONS[acts[0]],
              "max_position_embeddings": b4k.get("max_position", b4k.get("max_position_embeddings", 512)),
              "type_vocab_size": b4k.get("segment_vocab_size", b4k.get("type_vocab_size", 2)),
              "layer_norm_eps": 1e-12 if family in ("bert", "gpt") else KERAS_EPSILON,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if b4k.get("embedding_size") not in (None, b4k["hidden_size"]):
        if family in ("roformer_v2", "gpt"):
            raise ValueError(f"bert4keras config field 'embedding_size' != hidden_size is not supported for {model}")
        config["embedding_size"] = b4k["embedding_size"]
    options = {"pre_norm": False, "final_norm": False} if family == "gpt" else {}
    return config, options


def state_from_tf(model: torch.nn.Module, variables: dict[str, np.ndarray], bert4keras_model: str,
                  source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The kexue state dict of ``model`` read from bert4keras ``variables``; raises one
    :class:`~kexue.models.weights.CheckpointError` naming every missing, unexpected or mis-shaped variable."""
    names = REGISTRY[MODELS[bert4keras_model]].bert4keras
    rules = names.rules(bert4keras_model)
    state, used, missing, mismatched = {}, set(), [], []
    for name, param in model.state_dict().items():
        for ours, theirs in rules:
            m = re.fullmatch(ours, name)
            if m:
                tf_name = theirs.format(*(int(g) for g in m.groups()))
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
    unexpected = [v for v in variables if v not in used
                  and not any(re.fullmatch(p, v) for p in IGNORED + names.optional)]
    check_fit(LoadReport(sorted(missing), sorted(unexpected), sorted(mismatched)), source,
              f"bert4keras model {bert4keras_model!r}")
    return state


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
    with open(config_path, encoding="utf-8") as f:
        b4k = json.load(f)
    config, implied = convert_config(b4k, model)
    keep = read_token_list(keep_tokens, "keep_tokens") if keep_tokens is not None else None
    compound = read_token_list(compound_tokens, "compound_tokens") if compound_tokens is not None else None
    family = MODELS[model]
    for name, value in (("decoder_start_token_id", decoder_start_id), ("eos_token_id", eos_id)):
        if value is not None:
            if family != "t5":
                raise ValueError(f"{name} is a T5 setting; {model} has none")
            config[name] = value
    variables = read_tf_checkpoint(checkpoint)
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
