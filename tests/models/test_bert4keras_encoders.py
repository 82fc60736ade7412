"""ALBERT, NEZHA, ELECTRA and RoBERTa against bert4keras 0.11.5 itself: bert4keras builds each model with
random weights, writes a real TF checkpoint and predicts on real Chinese sentences (right-padded;
``tests/oracles/bert4keras_encoders_oracle.py``); ``kexue convert bert4keras`` converts the checkpoint in a
process where TensorFlow cannot be imported, ``build_model(checkpoint=...)`` loads the folder, and hidden
states, MLM probabilities (and their logarithms), pooled vectors and ELECTRA's replaced-token
probabilities equal bert4keras's to 1e-5 on every real position. Where transformers has the family, it
loads the converted folder and gives the same numbers.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bert4keras_common import encoders_oracle, max_diff, report  # noqa: F401  (encoders_oracle is a fixture)
from kexue.models import build_model

TOL = 1e-5


def _mask(ids: np.ndarray) -> np.ndarray:
    """bert4keras's padding mask: id 0 is padding, except the first column (its Embedding keeps it)."""
    mask = ids != 0
    mask[:, 0] = True
    return mask


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.long)


def _run(model, ids, segs, cond=None):
    mask = _mask(ids)
    with torch.no_grad():
        out = model(_t(ids), _t(segs), _t(mask), cond=None if cond is None else torch.as_tensor(cond))
    return out, mask


def _diffs(out, expected, mask, prefix=""):
    d = {"hidden": max_diff(out.hidden, expected[prefix + "hidden"], mask)}
    if prefix + "probs" in expected:
        d["probs"] = max_diff(out.logits.softmax(-1), expected[prefix + "probs"], mask)
        d["log_probs"] = max_diff(out.logits.log_softmax(-1), np.log(expected[prefix + "probs"]), mask)
    if prefix + "pooled" in expected:
        d["pooled"] = max_diff(out.pooled, expected[prefix + "pooled"])
    return d


VARIANTS = {  # variant -> (inputs, what it exercises)
    "albert": "ids",  # shared layers, E = 32 -> H = 64 mapping, pooler, MLM tied to the 32-wide embedding
    "albert_unilm": "pair_ids",
    "albert_cond": "pair_ids",  # Conditional LayerNorm inside the shared block
    "albert_unshared": "ids",  # every layer its own weights (bert4keras's kernel, kernel_1, ... copies)
    "albert_unshared_from_albert": "ids",  # a shared checkpoint loaded unshared
    "nezha": "ids",
    "nezha_lm": "ids",
    "nezha_unilm": "pair_ids",
    "electra": "ids",  # embeddings_project 32 -> 64, hidden states
    "roberta": "ids",
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_equals_bert4keras(encoders_oracle, name):
    folder, converted, data = encoders_oracle
    ids = VARIANTS[name]
    segs = ids.replace("ids", "segs")
    model = build_model(checkpoint=converted / name).eval()
    out, mask = _run(model, data[ids], data[segs], data["cond"] if name.endswith("_cond") else None)
    expected = np.load(folder / name / "outputs.npz")
    diffs = _diffs(out, expected, mask)
    report(name, **diffs)
    assert len(diffs) >= (1 if name == "electra" else 3) and max(diffs.values()) <= TOL, diffs


def test_the_variants_build_what_they_say(encoders_oracle):
    """The converted folders hold the computation named: ALBERT's one block or one per layer (unshared,
    really different weights), NEZHA's relative positions, bert4keras's roberta as BERT."""
    _, converted, _ = encoders_oracle
    shared, unshared = (build_model(checkpoint=converted / n) for n in ("albert", "albert_unshared"))
    assert len(shared.groups) == 1 and len(unshared.groups) == unshared.config.num_hidden_layers == 2
    assert not torch.equal(unshared.groups[0][0].attn.q.weight, unshared.groups[1][0].attn.q.weight)
    assert unshared.config.embedding_size == 32 and unshared.embeddings.project.weight.shape == (64, 32)
    copies = build_model(checkpoint=converted / "albert_unshared_from_albert")
    assert torch.equal(copies.groups[0][0].attn.q.weight, copies.groups[1][0].attn.q.weight)
    nezha = build_model(checkpoint=converted / "nezha")
    assert nezha.embeddings.position is None and nezha.config.max_relative_position == 64
    assert type(build_model(checkpoint=converted / "roberta")).__name__ == "BERT"
    cfg = json.loads((converted / "roberta" / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["kexue"]["family"] == "bert"


def test_nezha_clips_offsets_beyond_64(encoders_oracle):
    """Rows of 80 real tokens: offsets beyond ±64 share the table's edge rows, as bert4keras clips them."""
    folder, converted, _ = encoders_oracle
    expected = np.load(folder / "nezha" / "outputs.npz")
    ids, segs = expected["long_ids"], expected["long_segs"]
    assert (ids != 0).sum(1).max() > 65
    out, mask = _run(build_model(checkpoint=converted / "nezha").eval(), ids, segs)
    diffs = _diffs(out, expected, mask, prefix="long_")
    report("nezha, 80 tokens", **diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_electra_discriminator(encoders_oracle):
    """bert4keras's with_discriminator=True: sigmoid(kexue's logits) = its replaced-token probabilities."""
    folder, converted, data = encoders_oracle
    model = build_model(checkpoint=converted / "electra_disc").eval()
    assert model.options.with_discriminator
    out, mask = _run(model, data["ids"], data["segs"])
    expected = np.load(folder / "electra_disc" / "outputs.npz")
    diffs = {"hidden": max_diff(out.hidden, expected["hidden"], mask),
             "replaced": max_diff(out.logits.sigmoid(), expected["probs"][..., 0], mask)}
    report("electra discriminator", **diffs)
    assert out.logits.shape == data["ids"].shape and max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("name,cls", [("albert", "AlbertForMaskedLM"), ("albert_unshared", "AlbertForMaskedLM"),
                                      ("electra", "ElectraModel"), ("electra_disc", "ElectraForPreTraining"),
                                      ("roberta", "BertForMaskedLM")])
def test_converted_folders_load_in_transformers(encoders_oracle, name, cls):
    """The converted folder is a real HF checkpoint: transformers loads it and matches bert4keras."""
    import transformers

    folder, converted, data = encoders_oracle
    hf = getattr(transformers, cls).from_pretrained(converted / name).eval()
    mask = _mask(data["ids"])
    with torch.no_grad():
        out = hf(input_ids=_t(data["ids"]), token_type_ids=_t(data["segs"]), attention_mask=_t(mask),
                 output_hidden_states=True)
    expected = np.load(folder / name / "outputs.npz")
    diffs = {"hidden": max_diff(out.hidden_states[-1], expected["hidden"], mask)}
    if name == "electra_disc":
        diffs["replaced"] = max_diff(out.logits.sigmoid(), expected["probs"][..., 0], mask)
    elif "probs" in expected:
        diffs["log_probs"] = max_diff(out.logits.log_softmax(-1), np.log(expected["probs"]), mask)
    report(f"{name} via transformers", **diffs)
    assert max(diffs.values()) <= TOL, diffs
