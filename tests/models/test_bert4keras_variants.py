"""bert4keras itself as the oracle of GPT2-ML, GAU-α and keep_tokens / compound_tokens
(``tests/oracles/bert4keras_variants_oracle.py``, cached): bert4keras 0.11.5 builds each model with random
weights and saves a real TF checkpoint; ``kexue convert bert4keras`` (no TensorFlow in its process) turns it
into a folder, and kexue's hidden states and LM / MLM probabilities equal bert4keras's on real Chinese
sentences (right-padded) to 1e-5 on every real position. GAU-α's UniLM beam search (topk 4 and topk 1) is
token-identical to bert4keras's ``AutoRegressiveDecoder``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bert4keras_common import max_diff, report, variants_oracle  # noqa: F401  (variants_oracle is a fixture)
from kexue.generation import generate
from kexue.models import build_model
from kexue.text.tokenizer import Tokenizer, load_vocab

TOL = 1e-5


def _mask(ids: np.ndarray) -> np.ndarray:
    """bert4keras's padding mask: id 0 is padding, except the first column (its Embedding keeps it)."""
    mask = ids != 0
    mask[:, 0] = True
    return mask


def _check(name, out, expected, mask):
    diffs = {"hidden": max_diff(out.hidden, expected["hidden"], mask),
             "probs": max_diff(out.logits.softmax(-1), expected["probs"], mask),
             "log_probs": max_diff(out.logits.log_softmax(-1), np.log(expected["probs"]), mask)}
    report(name, **diffs)
    assert max(diffs.values()) <= TOL, diffs
    return diffs


def _run(folder, ids, segs=None, cond=None):
    model = build_model(checkpoint=folder).eval()
    mask = _mask(ids)
    with torch.no_grad():
        out = model(torch.as_tensor(ids, dtype=torch.long),
                    segment_ids=None if segs is None else torch.as_tensor(segs, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long),
                    cond=None if cond is None else torch.as_tensor(cond))
    return model, out, mask


def test_gpt2_ml(variants_oracle):
    folder, converted, data = variants_oracle
    model, out, mask = _run(converted / "gpt2_ml", data["ids"])
    assert type(model).__name__ == "GPT2ML" and model.application == "lm"
    _check("gpt2_ml", out, np.load(folder / "gpt2_ml" / "outputs.npz"), mask)


def test_gpt2_ml_conditional_layer_norm(variants_oracle):
    """Every norm conditional, the condition through a 16-unit ReLU dense (layer_norm_cond_hidden_*)."""
    folder, converted, data = variants_oracle
    model, out, mask = _run(converted / "gpt2_ml_cond", data["ids"][:3], cond=data["cond"])
    assert model.cond_dim == data["cond"].shape[1] and model.options.cond_hidden == 16
    _check("gpt2_ml_cond", out, np.load(folder / "gpt2_ml_cond" / "outputs.npz"), mask)


@pytest.mark.parametrize("name,ids,segs", [("gau_alpha", "long_ids", "long_segs"), ("gau_alpha_lm", "ids", "segs"),
                                           ("gau_alpha_unilm", "pair_ids", "pair_segs")])
def test_gau_alpha(variants_oracle, name, ids, segs):
    """GAU-α as MLM encoder (rows of up to 44 tokens: softmax_plus's log n past its floor of 16), as LM
    and as UniLM (n counts the keys the causal / prefix mask leaves)."""
    folder, converted, data = variants_oracle
    model, out, mask = _run(converted / name, data[ids], data[segs])
    assert type(model).__name__ == "GAUAlpha" and model.config.key_size == 24
    if name == "gau_alpha":
        assert mask.sum(1).max() > 16
    _check(name, out, np.load(folder / name / "outputs.npz"), mask)


def test_gau_alpha_cached_decoding_equals_the_full_pass(variants_oracle):
    """The KV cache (one token at a time, UniLM prefix mask) gives the logits of re-running the prefix."""
    _, converted, data = variants_oracle
    model = build_model(checkpoint=converted / "gau_decode").eval()
    row = data["gen_ids"][0]
    src = torch.as_tensor(row[row > 0], dtype=torch.long)[None]
    tgt = torch.as_tensor(data["ids"][0][1:9], dtype=torch.long)[None]
    full_ids = torch.cat([src, tgt], 1)
    segs = torch.cat([torch.zeros_like(src), torch.ones_like(tgt)], 1)
    with torch.no_grad():
        full = model(full_ids, segs).logits[0, src.shape[1] - 1:-1]
    from kexue.generation import decoding_state

    state = decoding_state(model, src)
    with torch.inference_mode():
        steps = [state.prefill()[0]] + [state.step(t[None])[0] for t in tgt[0, :-1]]
    diff = (torch.stack(steps) - full).abs().max().item()
    report("gau_alpha cached decoding", max_logit_diff=diff)
    assert diff <= 1e-5


def test_gau_alpha_unilm_beam_search_is_bert4keras(variants_oracle):
    """SimBERT-style decoding of a GAU-α: beam search (topk 4, with and without an end token) and topk 1
    (``num_beams=1, rule="bert4keras"``, also with minlen 4 / min_ends 2) give bert4keras's tokens."""
    folder, converted, data = variants_oracle
    model = build_model(checkpoint=converted / "gau_decode").eval()
    expected = np.load(folder / "gau_decode" / "outputs.npz")
    end = int(expected["end_id"])
    checked = 0
    for i, (r, s) in enumerate(zip(data["gen_ids"], data["gen_segs"])):
        ids = torch.as_tensor(r[r > 0], dtype=torch.long)[None]
        segs = torch.as_tensor(s[r > 0], dtype=torch.long)[None]
        runs = {"beam": dict(num_beams=4, eos_id=end), "beam_noend": dict(num_beams=4, eos_id=None),
                "top1": dict(num_beams=1, eos_id=end),
                "top1_min": dict(num_beams=1, eos_id=end, min_new_tokens=4, min_ends=2)}
        for key, kw in runs.items():
            got = generate(model, ids, segment_ids=segs, max_new_tokens=12, rule="bert4keras", **kw)[0]
            want = expected[f"{key}_{i}"].tolist()
            if want and want[-1] == end and kw["eos_id"] is not None:
                want = want[:-1]  # bert4keras returns the final end token; kexue's result stops before it
            assert got == want, (key, i, got, want)
            checked += 1
    ends = sum(end in expected[f"beam_{i}"].tolist() or len(expected[f"beam_{i}"]) < 12 for i in range(4))
    report("gau_alpha decoding", sequences=checked, ended_early=ends)
    assert checked == 16


@pytest.mark.parametrize("name", ["bert_keep", "gpt2_ml_keep", "t5_keep"])
def test_keep_and_compound_tokens(variants_oracle, name):
    """bert4keras built with keep_tokens + compound_tokens from a full-vocabulary checkpoint vs ``kexue
    convert bert4keras --keep-tokens --compound-tokens`` of that checkpoint: equal outputs on inputs in the
    kept vocabulary that use compound tokens; the vocabulary written beside the weights is the trimmed one."""
    folder, converted, data = variants_oracle
    expected = np.load(folder / name / "outputs.npz")
    keep = json.loads((folder / name / "keep_tokens.json").read_text())
    compound = json.loads((folder / name / "compound_tokens.json").read_text())
    n = len(keep) + len(compound)
    vocab = load_vocab(folder / "vocab.txt")
    tokens = load_vocab(converted / name / "vocab.txt")
    assert tokens[:len(keep)] == [vocab[i] for i in keep] and len(tokens) == n
    assert Tokenizer.from_pretrained(converted / name).vocab_size == n
    if name == "t5_keep":
        model = build_model(checkpoint=converted / name).eval()
        assert model.config.vocab_size == n and model.lm_head.weight.shape[0] == n
        enc, dec = expected["enc"], expected["dec"]
        assert (enc >= len(keep)).any() and (dec >= len(keep)).any()  # compound tokens are read
        em, dm = _mask(enc), _mask(dec)
        with torch.no_grad():
            e_mask = torch.as_tensor(em, dtype=torch.long)
            hidden = model.encode(torch.as_tensor(enc, dtype=torch.long), e_mask)
            logits = model.decode(torch.as_tensor(dec, dtype=torch.long), hidden, e_mask,
                                  decoder_attention_mask=torch.as_tensor(dm, dtype=torch.long))
        diffs = {"hidden": max_diff(hidden, expected["hidden"], em),
                 "probs": max_diff(logits.softmax(-1), expected["probs"], dm),
                 "log_probs": max_diff(logits.log_softmax(-1), np.log(expected["probs"]), dm)}
        report(name, **diffs)
        assert max(diffs.values()) <= TOL, diffs
        return
    ids = expected["ids"]
    assert (ids >= len(keep)).any()
    model, out, mask = _run(converted / name, ids, expected["segs"] if "segs" in expected else None)
    assert model.config.vocab_size == n and out.logits.shape[-1] == n
    _check(name, out, expected, mask)


def test_build_model_applies_keep_tokens_like_the_converter(variants_oracle, tmp_path):
    """``build_model(checkpoint=full, keep_tokens=..., compound_tokens=...)`` on the full-vocabulary folder
    gives the model the converter wrote with the same lists, tensor for tensor."""
    from kexue.cli import main

    folder, converted, _ = variants_oracle
    entry = json.loads((folder / "manifest.json").read_text())["bert_keep"]
    full = tmp_path / "full"
    assert main(["convert", "bert4keras", "--config", str(folder / "bert_keep" / "bert_config.json"), "--checkpoint",
                 str(folder / "bert_keep" / "model.ckpt"), "--model", entry["model"], "--with-mlm",
                 "--out", str(full)]) == 0
    keep = json.loads((folder / "bert_keep" / "keep_tokens.json").read_text())
    compound = json.loads((folder / "bert_keep" / "compound_tokens.json").read_text())
    ours = build_model(checkpoint=full, keep_tokens=keep, compound_tokens=compound)
    theirs = build_model(checkpoint=converted / "bert_keep")
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
