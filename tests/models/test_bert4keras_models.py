"""bert4keras itself as the oracle: bert4keras 0.11.5 builds each model with random weights, saves a
real TF checkpoint and predicts on real Chinese sentences (right-padded); ``kexue convert bert4keras``
turns the checkpoint into an HF-layout folder, ``build_model(checkpoint=...)`` loads it, and the
outputs must equal bert4keras's to 1e-5 on every real (unpadded) position: hidden states, MLM / LM
probabilities (and their logarithms, which see the small ones), pooled vectors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bert4keras_common import max_diff, oracle, report  # noqa: F401  (oracle is a fixture)
from kexue.generation import decoding_state
from kexue.models import build_model

TOL = 1e-5


def _mask(ids: np.ndarray) -> np.ndarray:
    """bert4keras's padding mask: id 0 is padding, except the first column (its Embedding keeps it)."""
    mask = ids != 0
    mask[:, 0] = True
    return mask


def _run(converted, name, ids, segs, cond=None):
    model = build_model(checkpoint=converted / name).eval()
    mask = _mask(ids)
    with torch.no_grad():
        out = model(torch.as_tensor(ids, dtype=torch.long), segment_ids=torch.as_tensor(segs, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long),
                    cond=None if cond is None else torch.as_tensor(cond))
    return out, mask


def _check(name, out, expected, mask, pooled=False):
    diffs = {"hidden": max_diff(out.hidden, expected["hidden"], mask),
             "probs": max_diff(out.logits.softmax(-1), expected["probs"], mask),
             "log_probs": max_diff(out.logits.log_softmax(-1), np.log(expected["probs"]), mask)}
    if pooled:
        diffs["pooled"] = max_diff(out.pooled, expected["pooled"])
    report(name, **diffs)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("name", ["bert", "roformer"])
def test_encoder_with_pool_and_mlm(oracle, name):
    folder, converted, data = oracle
    out, mask = _run(converted, name, data["ids"], data["segs"])
    _check(name, out, np.load(folder / name / "outputs.npz"), mask, pooled=True)


def test_simbert_unilm_with_linear_pooler(oracle):
    """SimBERT's build: application='unilm', with_pool='linear' (pooled vector without tanh)."""
    folder, converted, data = oracle
    out, mask = _run(converted, "bert_unilm", data["pair_ids"], data["pair_segs"])
    _check("bert_unilm", out, np.load(folder / "bert_unilm" / "outputs.npz"), mask, pooled=True)


@pytest.mark.parametrize("name,ids", [("bert_lm", "ids"), ("roformer_unilm", "pair_ids"), ("roformer_v2", "ids"),
                                      ("gpt", "ids"), ("roformer_small_embedding", "ids")])
def test_applications_and_families(oracle, name, ids):
    folder, converted, data = oracle
    segs = "pair_segs" if ids == "pair_ids" else "segs"
    out, mask = _run(converted, name, data[ids], data[segs])
    _check(name, out, np.load(folder / name / "outputs.npz"), mask)


@pytest.mark.parametrize("name", ["bert_cond", "bert_cond_hidden"])
def test_conditional_layer_norm(oracle, name):
    """Conditional LayerNorm on every norm (embeddings, layers, MLM), the condition straight in and
    through a 16-unit ReLU dense (bert4keras's layer_norm_cond_hidden_size / _act)."""
    folder, converted, data = oracle
    out, mask = _run(converted, name, data["pair_ids"], data["pair_segs"], cond=data["cond"])
    _check(name, out, np.load(folder / name / "outputs.npz"), mask)


def test_hierarchical_positions(oracle):
    """A 16-position table read at up to 44 positions (bert4keras hierarchical_position=True, α = 0.4)."""
    folder, converted, data = oracle
    assert data["long_ids"].shape[1] > 16
    out, mask = _run(converted, "bert_hierarchical", data["long_ids"], data["long_segs"])
    _check("bert_hierarchical", out, np.load(folder / "bert_hierarchical" / "outputs.npz"), mask)


def test_t5_v1_1(oracle):
    """T5 v1.1: encoder states and decoder probabilities (bert4keras's d^-1/2 output scale and
    cross-attention position bias included)."""
    folder, converted, data = oracle
    model = build_model(checkpoint=converted / "t5").eval()
    enc, dec = data["t5_enc"], data["t5_dec"]
    enc_mask, dec_mask = _mask(enc), _mask(dec)
    with torch.no_grad():
        e_ids = torch.as_tensor(enc, dtype=torch.long)
        e_mask = torch.as_tensor(enc_mask, dtype=torch.long)
        hidden = model.encode(e_ids, e_mask)
        logits = model.decode(torch.as_tensor(dec, dtype=torch.long), hidden, e_mask,
                              decoder_attention_mask=torch.as_tensor(dec_mask, dtype=torch.long))
    expected = np.load(folder / "t5" / "outputs.npz")
    diffs = {"hidden": max_diff(hidden, expected["hidden"], enc_mask),
             "probs": max_diff(logits.softmax(-1), expected["probs"], dec_mask),
             "log_probs": max_diff(logits.log_softmax(-1), np.log(expected["probs"]), dec_mask)}
    report("t5.1.1", **diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_t5_cached_decoding_keeps_the_cross_position_bias(oracle):
    """Decoding one token at a time (KV cache, decoding state) gives the logits of the full decoder pass,
    the cross-attention bias included (it depends on the query's absolute position)."""
    _, converted, data = oracle
    model = build_model(checkpoint=converted / "t5").eval()
    assert model.config.decoder_start_token_id == int(data["t5_dec"][0, 0])  # --decoder-start-id: [CLS]
    enc = torch.as_tensor(data["t5_enc"][:1], dtype=torch.long)
    enc = enc[:, : int((enc[0] != 0).sum())]
    dec = [model.config.decoder_start_token_id] + [int(t) for t in data["t5_dec"][0] if t][1:8]
    with torch.no_grad():
        full = model.decode(torch.tensor([dec]), model.encode(enc))[0]
    state = decoding_state(model, enc)
    with torch.inference_mode():
        steps = [state.prefill()[0]] + [state.step(torch.tensor([t]))[0] for t in dec[1:]]
    diff = (torch.stack(steps) - full).abs().max().item()
    report("t5.1.1 cached decoding", max_logit_diff=diff)
    assert diff <= 1e-5


@pytest.mark.parametrize("name,cls", [("bert", "BertForMaskedLM"), ("roformer", "RoFormerForMaskedLM")])
def test_converted_folders_are_hf_layout(oracle, name, cls):
    """The converted folder is a real HF checkpoint: transformers itself loads it and matches bert4keras."""
    import transformers

    folder, converted, data = oracle
    hf = getattr(transformers, cls).from_pretrained(converted / name).eval()
    mask = _mask(data["ids"])
    with torch.no_grad():
        out = hf(input_ids=torch.as_tensor(data["ids"], dtype=torch.long),
                 token_type_ids=torch.as_tensor(data["segs"], dtype=torch.long),
                 attention_mask=torch.as_tensor(mask, dtype=torch.long), output_hidden_states=True)
    expected = np.load(folder / name / "outputs.npz")
    diffs = {"hidden": max_diff(out.hidden_states[-1], expected["hidden"], mask),
             "log_probs": max_diff(out.logits.log_softmax(-1), np.log(expected["probs"]), mask)}
    report(f"{name} via transformers", **diffs)
    assert max(diffs.values()) <= TOL, diffs
