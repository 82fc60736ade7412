"""No silent option, no silent bad input: config fields kexue does not compute are refused by name
(with the file's path), bad ids / shapes raise ValueError naming them, and none of these checks
blocks torch.export of an encoder."""
import json

import pytest
import torch
import transformers as tf

from kexue.models.checkpoints import save_pretrained
from kexue.models import CheckpointError, ConfigError, build_model
from kexue.models.family import REFUSED

torch.set_num_threads(1)
BERT = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2 = dict(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=16, model_type="gpt2")
T5 = dict(vocab_size=50, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, model_type="t5")
CONFIGS = {"bert": BERT, "roformer": {**BERT, "model_type": "roformer"},
           "roformer_v2": {**BERT, "model_type": "roformer_v2"}, "gpt": GPT2, "t5": T5}
CONFIGS.update({"gpt2_ml": {**BERT, "model_type": "gpt2_ml"}, "gau_alpha": {**BERT, "model_type": "gau_alpha"}})
CONFIGS.update({f: {**BERT, "model_type": f} for f in ("albert", "nezha", "electra")})


def _write(tmp_path, d):
    (tmp_path / "config.json").write_text(json.dumps(d))
    return tmp_path


@pytest.mark.parametrize("family,field", [(f, k) for f, fields in REFUSED.items() for k in fields])
def test_refused_fields_are_named_with_the_path(tmp_path, family, field):
    allowed = REFUSED[family][field][0]
    bad = {False: True, True: False, "absolute": "relative_key"}.get(allowed, {"0": [1]}) if allowed != {} \
        else {"0": [1]}
    with pytest.raises(ConfigError, match=f"'{field}'.*{tmp_path}"):
        build_model(_write(tmp_path, {**CONFIGS[family], field: bad}))
    build_model({**CONFIGS[family], field: allowed})  # the allowed value builds


@pytest.mark.parametrize("family,field,value", [
    ("bert", "hidden_act", "quick_gelu"), ("bert", "rotary_value", True), ("bert", "scale_attn_weights", False),
    ("gpt", "embedding_size", 16), ("gpt", "activation_function", "gelu_fast"), ("gpt", "n_head", 0),
    ("t5", "feed_forward_proj", "gated-quick_gelu"), ("t5", "feed_forward_proj", "gelu-gated"),
    ("t5", "eos_token_id", [1, 2]), ("bert", "model_type", "xlnet"), ("bert", "n_embd", 32),
    ("bert", "model_type", "roberta"),
])
def test_unimplemented_values_are_named(tmp_path, family, field, value):
    with pytest.raises(ConfigError, match=f"'{field}'.*{tmp_path}"):
        build_model(_write(tmp_path, {**CONFIGS[family], field: value}))


@pytest.mark.parametrize("block,word", [({"family": "bert", "colour": 1}, "colour"),
                                        ({"family": "bert", "rope": True}, "rope"),
                                        ({"family": "bert", "application": "seq2seq"}, "application"),
                                        ({"family": "t5", "cond_dim": 4}, "cond_dim"),
                                        ({"family": "roformer", "hierarchical_alpha": 0.4}, "hierarchical_alpha"),
                                        ({"family": "bert", "hierarchical_alpha": 1.5}, "hierarchical_alpha"),
                                        ({"family": "bert", "with_pool": "no"}, "with_pool"),
                                        ({"family": "bert", "cond_hidden": 4}, "cond_hidden")])
def test_bad_kexue_block_is_named(tmp_path, block, word):
    base = T5 if block["family"] == "t5" else BERT
    with pytest.raises(ConfigError, match=f"{word}.*{tmp_path}"):
        build_model(_write(tmp_path, {**base, "kexue": block}))


def test_invalid_json_wrong_types_and_zero_heads_name_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"vocab_size": 50,')
    with pytest.raises(ConfigError, match=f"{tmp_path}.*not valid JSON"):
        build_model(tmp_path)
    for field, value in (("hidden_size", "32"), ("num_attention_heads", 0), ("num_hidden_layers", 2.5),
                         ("layer_norm_eps", "small"), ("type_vocab_size", True)):
        with pytest.raises(ConfigError, match=f"'{field}'.*{tmp_path}"):
            build_model(_write(tmp_path, {**BERT, field: value}))
    with pytest.raises(ConfigError, match=f"'d_model'.*{tmp_path}"):
        build_model(_write(tmp_path, {**T5, "d_model": None}))


def test_checkpoint_without_config_or_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_model(checkpoint=tmp_path)
    _write(tmp_path, BERT)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        build_model(checkpoint=tmp_path)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return build_model(BERT, with_pool=True).eval()


def test_bad_ids_and_shapes_are_named(bert):
    ids = torch.randint(1, 50, (2, 6))
    with pytest.raises(ValueError, match="input_ids holds a negative id"):
        bert(ids - 10)
    with pytest.raises(ValueError, match="segment_ids holds id 2, outside type_vocab_size=2"):
        bert(ids, torch.full_like(ids, 2))
    with pytest.raises(ValueError, match="segment_ids holds a negative id"):
        bert(ids, torch.full_like(ids, -1))
    with pytest.raises(ValueError, match="position_ids holds a negative id"):
        bert(ids, position_ids=torch.arange(6) - 3)
    with pytest.raises(ValueError, match=r"segment_ids shape \[1, 6\] != input_ids shape \[2, 6\]"):
        bert(ids, torch.zeros(1, 6, dtype=torch.long))  # would broadcast
    with pytest.raises(ValueError, match="attention_mask shape"):
        bert(ids, attention_mask=torch.ones(1, 6))
    with pytest.raises(ValueError, match="attention_mask shape"):
        bert(ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="position_ids shape"):
        bert(ids, position_ids=torch.arange(5))
    with pytest.raises(ValueError, match="input_ids must be"):
        bert(ids[0])
    with pytest.raises(ValueError, match="input_ids must hold integers"):
        bert(ids.float())
    with pytest.raises(ValueError, match="cond was given"):
        bert(ids, cond=torch.zeros(2, 4))


def test_gpt_token_types_index_the_vocabulary_and_t5_checks_ids():
    gpt = build_model(GPT2).eval()
    ids = torch.randint(1, 50, (1, 5))
    gpt(ids, ids)  # token types are looked up in wte, as HF GPT-2 does
    with pytest.raises(ValueError, match="segment_ids holds id 50, outside type_vocab_size=50"):
        gpt(ids, torch.full_like(ids, 50))
    t5 = build_model(T5).eval()
    with pytest.raises(ValueError, match="decoder_input_ids holds a negative id"):
        t5(ids, -ids)
    with pytest.raises(ValueError, match="input_ids holds id 50"):
        t5(torch.full_like(ids, 50), ids)


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_torch_export_of_encoders_matches_eager(family):
    torch.manual_seed(0)
    model = build_model({**BERT, "model_type": family}, with_pool=family == "bert").eval()
    ids = torch.randint(1, 50, (2, 7))
    segs = torch.randint(0, 2, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, segs, mask):
            return self.m(ids, segs, mask).hidden

    exported = torch.export.export(Wrapped(model), (ids, segs, mask))
    other = torch.randint(1, 50, (2, 7))
    with torch.no_grad():
        for x in (ids, other):
            assert (exported.module()(x, segs, mask) - model(x, segs, mask).hidden).abs().max() <= 1e-5


def test_unilm_from_an_mlm_checkpoint_generates_and_a_bare_encoder_is_refused(tmp_path):
    """The README quick start: build_model(checkpoint=..., application="unilm") then generate."""
    from kexue.generation import generate

    torch.manual_seed(0)
    tf.BertForMaskedLM(tf.BertConfig(**BERT)).save_pretrained(tmp_path / "mlm")
    unilm = build_model(checkpoint=tmp_path / "mlm", application="unilm").eval()
    assert unilm.with_mlm
    out = generate(unilm, torch.randint(5, 50, (2, 4)), max_new_tokens=3, num_beams=2)
    assert len(out) == 2 and all(len(o) <= 3 for o in out)
    tf.BertModel(tf.BertConfig(**BERT)).save_pretrained(tmp_path / "bare")
    with pytest.raises(CheckpointError, match="missing.*cls.predictions.transform.dense.weight"):
        build_model(checkpoint=tmp_path / "bare", application="unilm")


def test_tied_model_refuses_a_different_head_in_a_direct_load(tmp_path):
    """load_checkpoint into a model built tied unties it (transformers 5), never drops the head."""
    from kexue.models.checkpoints import load_checkpoint

    torch.manual_seed(0)
    hf = tf.BertForMaskedLM(tf.BertConfig(**BERT, tie_word_embeddings=False))
    hf.save_pretrained(tmp_path)
    model = build_model(BERT, with_mlm=True)
    assert model.head_tied()
    load_checkpoint(model, tmp_path)
    assert not model.head_tied()
    assert torch.equal(model.mlm.weight, hf.cls.predictions.decoder.weight)
    save_pretrained(model, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["tie_word_embeddings"] is False


@pytest.mark.parametrize("variant", ["chunk_size_feed_forward", "reorder_and_upcast_attn"])
def test_accepted_precision_and_chunking_fields_match_transformers(tmp_path, variant):
    """Fields kexue accepts without code: chunking and HF's upcast switch leave the fp32 result unchanged."""
    torch.manual_seed(0)
    if variant == "chunk_size_feed_forward":
        hf = tf.BertModel(tf.BertConfig(**BERT, chunk_size_feed_forward=3), add_pooling_layer=False).eval()
    else:
        cfg = {k: v for k, v in GPT2.items() if k != "model_type"}
        config = tf.GPT2Config(**cfg, reorder_and_upcast_attn=True, scale_attn_by_inverse_layer_idx=True)
        config._attn_implementation = "eager"  # HF's upcast path exists in eager attention only
        hf = tf.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    ours = build_model(checkpoint=tmp_path).eval()
    ids = torch.randint(1, 50, (2, 9))
    with torch.no_grad():
        ref = hf(input_ids=ids)
        got = ours(ids)
        diff = (got.hidden - ref.last_hidden_state) if variant.startswith("chunk") else (got.logits - ref.logits)
    assert diff.abs().max() <= 1e-5


def test_mis_shaped_fused_and_transposed_tensors_are_named_in_hf_shapes(tmp_path):
    from safetensors.torch import load_file, save_file

    save_pretrained(build_model(GPT2), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["transformer.h.1.attn.c_attn.weight"] = state["transformer.h.1.attn.c_attn.weight"][:, :90]
    state["transformer.h.0.mlp.c_fc.weight"] = state["transformer.h.0.mlp.c_fc.weight"].t()
    del state["transformer.ln_f.bias"]
    state["transformer.h.0.attn.extra"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        build_model(checkpoint=tmp_path)
    msg = str(err.value)
    assert "missing (1): transformer.ln_f.bias" in msg and "unexpected (1): transformer.h.0.attn.extra" in msg
    assert "transformer.h.1.attn.c_attn.weight checkpoint [32, 90] vs model [32, 96]" in msg
    assert "transformer.h.0.mlp.c_fc.weight checkpoint [128, 32] vs model [32, 128]" in msg


def test_segments_without_a_token_type_table():
    model = build_model({**BERT, "type_vocab_size": 0}, application="unilm").eval()
    ids = torch.randint(1, 50, (1, 6))
    segs = torch.tensor([[0, 0, 0, 1, 1, 1]])
    model(ids, segs)  # UniLM: segment ids shape the mask only
    with pytest.raises(ValueError, match="segment_ids holds id 2"):
        model(ids, segs * 2)
    encoder = build_model({**BERT, "type_vocab_size": 0}).eval()
    encoder(ids, torch.zeros_like(ids))
    with pytest.raises(ValueError, match="segment_ids holds id 1, outside type_vocab_size=0"):
        encoder(ids, segs)
