"""ALBERT, NEZHA, ELECTRA and the roberta name: what the oracle tests elsewhere do not reach.

* HF configs missing fields read transformers' defaults (``AlbertConfig``, ``ElectraConfig``), not BERT's;
* NEZHA equals bert4torch's NEZHA (the HF layout transformers dropped; its relative positions clipped
  at a small ``max_relative_position`` so the clipping acts) on the same weights, on real text with
  padding, and kexue's decoding with a KV cache equals re-running the prefix;
* ALBERT's shared block keeps one KV cache slot per depth: cached decoding equals re-running;
* options a family does not have are refused by name; roberta is BERT, transformers' roberta is refused.
The bert4keras and transformers parities: test_bert4keras_encoders.py, test_family_roundtrip.py.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import transformers

from families_common import encoder_batch, sentences, tokenizer
from kexue.generation import decoding_state
from kexue.models import ConfigError, build_model
from kexue.models.checkpoints import save_pretrained

torch.set_num_threads(1)
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("family,hf_config", [("albert", transformers.AlbertConfig),
                                              ("electra", transformers.ElectraConfig)])
def test_missing_fields_read_transformers_defaults(family, hf_config):
    model = build_model({"model_type": family, "num_hidden_layers": 1}, with_mlm=True)
    theirs, ours = hf_config(num_hidden_layers=1), model.config
    for field in ("vocab_size", "embedding_size", "hidden_size", "num_attention_heads", "intermediate_size",
                  "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
                  "hidden_dropout_prob", "attention_probs_dropout_prob"):
        assert getattr(ours, field) == getattr(theirs, field), field
    if family == "albert":
        assert (ours.num_hidden_groups, ours.inner_group_num) == (theirs.num_hidden_groups, theirs.inner_group_num)


def _random(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def test_nezha_equals_bert4torch(tmp_path):
    """bert4torch 0.5.0's NEZHA (offline, ``model='nezha'``) loads kexue's saved folder: pooled vectors and
    MLM logits on padded real sentences agree; M = 5 so offsets beyond ±5 are clipped."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bert4torch.models import build_transformer_model

    tok = tokenizer()
    config = dict(SMALL, vocab_size=tok.vocab_size, model_type="nezha", max_relative_position=5, hidden_act="gelu")
    torch.manual_seed(0)
    ours = _random(build_model(config, with_pool=True, with_mlm=True))
    save_pretrained(ours, tmp_path, safe_serialization=False)
    b4t_config = {**config, "model": "nezha", "tie_emb_prj_weight": True, "max_position_embeddings": 512}
    (tmp_path / "bert4torch_config.json").write_text(json.dumps(b4t_config))
    theirs = build_transformer_model(config_path=str(tmp_path / "bert4torch_config.json"),
                                     checkpoint_path=str(tmp_path / "pytorch_model.bin"), model="nezha",
                                     with_pool=True, with_mlm=True).eval()
    batch = encoder_batch(sentences(6))
    ids, segs, mask = batch["input_ids"], batch["segment_ids"], batch["attention_mask"]
    assert ids.shape[1] > 12 and not bool(mask.all())  # offsets reach past ±5; rows are padded
    with torch.no_grad():
        hidden, pooled, logits = theirs([ids, segs])
        out = ours(ids, segs, mask)
    real = mask.bool()
    assert (out.hidden[real] - hidden[real]).abs().max() <= 1e-5
    assert (out.logits[real] - logits[real]).abs().max() <= 1e-5
    assert (out.pooled - pooled).abs().max() <= 1e-5


@pytest.mark.parametrize("family,extra", [("nezha", {"max_relative_position": 3}),
                                          ("albert", {"embedding_size": 16}),
                                          ("albert", {"embedding_size": 16, "num_hidden_layers": 4,
                                                      "num_hidden_groups": 2, "inner_group_num": 2})])
def test_cached_decoding_equals_rerunning_the_prefix(family, extra):
    """UniLM decoding with a KV cache: the logits of each step equal a full forward pass of the whole
    sequence (NEZHA: the new query's offsets to the cached keys; ALBERT: a cache slot per depth)."""
    tok = tokenizer()
    torch.manual_seed(0)
    model = _random(build_model({**SMALL, "vocab_size": tok.vocab_size, "model_type": family, **extra},
                                application="unilm"))
    ids, segs = (torch.tensor([v]) for v in tok.encode(sentences(1)[0], maxlen=12))
    new = [int(t) for t in tok.encode(sentences(2)[1])[0][1:8]]
    state = decoding_state(model, ids, segment_ids=segs)
    with torch.inference_mode():
        steps = [state.prefill()[0]] + [state.step(torch.tensor([t]))[0] for t in new]
        full_ids = torch.cat([ids, torch.tensor([new])], 1)
        full_segs = torch.cat([segs, torch.ones(1, len(new), dtype=torch.long)], 1)
        full = model(full_ids, full_segs).logits[0, ids.shape[1] - 1:]
    assert (torch.stack(steps) - full).abs().max() <= 1e-5


def test_nezha_positions_are_index_offsets():
    model = build_model({**SMALL, "vocab_size": 30, "model_type": "nezha"}).eval()
    ids = torch.arange(1, 7)[None]
    with torch.no_grad():
        plain = model(ids).hidden
        padded = model(ids, position_ids=torch.tensor([[0, 0, 0, 1, 2, 3]]),
                       attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]])).hidden
    assert plain.shape == padded.shape
    with pytest.raises(ValueError, match="NEZHA's positions are the offsets j - i"):
        model(ids, position_ids=torch.tensor([[0, 2, 4, 6, 8, 10]]))
    with pytest.raises(ConfigError, match="hierarchical_alpha"):
        build_model({**SMALL, "vocab_size": 30, "model_type": "nezha"}, hierarchical_alpha=0.4)
    for field, value in (("use_relative_position", False), ("rotary_value", True)):
        with pytest.raises(ConfigError, match=field):
            build_model({**SMALL, "vocab_size": 30, "model_type": "nezha", field: value})


def test_options_a_family_lacks_are_refused():
    electra = {**SMALL, "vocab_size": 30, "model_type": "electra"}
    with pytest.raises(ConfigError, match="with_discriminator.*exclude each other"):
        build_model(electra, with_discriminator=True, with_mlm=True)
    with pytest.raises(ConfigError, match="electra has no pooler"):
        build_model(electra, with_pool=True)
    with pytest.raises(ConfigError, match="application 'unilm'"):
        build_model(electra, application="unilm")
    with pytest.raises(ConfigError, match="with_discriminator.*not available for family bert"):
        build_model({**SMALL, "vocab_size": 30}, with_discriminator=True)
    with pytest.raises(ConfigError, match="num_hidden_groups=3"):
        build_model({**SMALL, "vocab_size": 30, "model_type": "albert", "num_hidden_groups": 3})


def test_roberta_is_bert_by_name_only():
    model = build_model({**SMALL, "vocab_size": 30}, family="roberta", with_mlm=True)
    assert type(model).__name__ == "BERT" and model.options.family == "bert"
    with pytest.raises(ConfigError, match="RoBERTa offsets position ids"):
        build_model({**SMALL, "vocab_size": 30, "model_type": "roberta"})
