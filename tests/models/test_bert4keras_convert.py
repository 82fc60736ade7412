"""``kexue convert bert4keras`` input checking (no TensorFlow needed): every refusal names its cause
and nothing is written. Numerical parity with bert4keras itself: tests/models/test_bert4keras_models.py."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from kexue.models.bert4keras import convert_config, read_tf_checkpoint, state_from_tf
from kexue.cli import main
from kexue.models import CheckpointError, build_model

B4K = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
       "intermediate_size": 32, "hidden_act": "gelu", "max_position_embeddings": 20, "type_vocab_size": 2}


@pytest.mark.parametrize("field,value", [("residual_attention_scores", True), ("shared_segment_embeddings", True),
                                         ("attention_key_size", 4), ("keep_tokens", [0, 1, 2])])
def test_refused_config_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        convert_config({**B4K, field: value}, "bert")


def test_unknown_model_and_activation_are_named():
    with pytest.raises(ValueError, match="unknown bert4keras model 'xlnet'"):
        convert_config(B4K, "xlnet")
    with pytest.raises(ValueError, match="hidden_act 'mish'"):
        convert_config({**B4K, "hidden_act": "mish"}, "bert")
    with pytest.raises(ValueError, match="gated FFN"):
        convert_config({**B4K, "hidden_act": ["gelu", "linear"]}, "bert")


def test_attention_key_size_equal_to_the_default_is_accepted():
    config, _ = convert_config({**B4K, "attention_key_size": 8}, "bert")
    assert config["hidden_size"] == 16


def test_checkpoint_mismatches_are_named_together():
    config, _ = convert_config(B4K, "bert")
    model = build_model(config=config, family="bert", application="encoder")
    d = 16
    variables = {"bert/embeddings/word_embeddings": np.zeros((50, d), np.float32),
                 "bert/embeddings/token_type_embeddings": np.zeros((3, d), np.float32),  # wrong shape
                 "bert/encoder/layer_0/attention/self/quer/kernel": np.zeros((d, d), np.float32),  # typo
                 "global_step": np.zeros((), np.int64), "bert/encoder/layer_0/attention/self/query/adam_m":
                 np.zeros((d, d), np.float32)}  # optimizer state: ignored
    with pytest.raises(CheckpointError) as err:  # one strict-load report, as for HF folders
        state_from_tf(model, variables, "bert", "ckpt")
    assert isinstance(err.value, ValueError) and err.value.report.unexpected == [
        "bert/encoder/layer_0/attention/self/quer/kernel"]
    msg = str(err.value)
    assert "bert/embeddings/position_embeddings" in msg and "missing" in msg
    assert "unexpected (1): bert/encoder/layer_0/attention/self/quer/kernel" in msg
    assert "bert/embeddings/token_type_embeddings [3, 16] vs embeddings.segment.weight [2, 16]" in msg
    assert "adam_m" not in msg and "global_step" not in msg


def test_missing_checkpoint_without_tensorflow(tmp_path, monkeypatch):
    """Reading needs no TensorFlow (``import tensorflow`` made to fail): a missing checkpoint is a
    one-line error naming the file."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ValueError, match="model.ckpt.index is missing"):
        read_tf_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "config.json").write_text(json.dumps(B4K))
    out = tmp_path / "out"
    rc = main(["convert", "bert4keras", "--config", str(tmp_path / "config.json"), "--checkpoint",
               str(tmp_path / "model.ckpt"), "--model", "bert", "--out", str(out)])
    assert rc == 2 and not out.exists()
    with pytest.raises(ValueError, match="eos_token_id is a T5 setting"):
        from kexue.models.bert4keras import convert
        convert(tmp_path / "config.json", tmp_path / "model.ckpt", "bert", out, eos_id=3)
    assert not out.exists()


def test_pool_activation_option_is_checked():
    config, _ = convert_config(B4K, "bert")
    model = build_model(config=config, family="bert", with_pool=True, pool_act="linear")
    x = torch.arange(1, 7)[None]
    with torch.no_grad():
        pooled = model(x).pooled
        dense = model.pooler(model(x).hidden[:, 0])
    assert torch.equal(pooled, dense)  # linear: no tanh (SimBERT)
    with pytest.raises(ValueError, match="pool_act"):
        build_model(config=config, family="bert", pool_act="linear")  # no pooler to apply it to
    with pytest.raises(ValueError, match="pool_act='mish'"):
        build_model(config=config, family="bert", with_pool=True, pool_act="mish")


def test_t5_dense_act_fn_matches_transformers(tmp_path):
    """bert4keras's T5 uses the erf GELU in its gated FFN: config.json says ``dense_act_fn: "gelu"``
    next to ``feed_forward_proj: "gated-gelu"``, which transformers honours and so must kexue."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    hf = T5ForConditionalGeneration(T5Config(vocab_size=60, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                                             feed_forward_proj="gated-gelu", dense_act_fn="gelu",
                                             tie_word_embeddings=False, dropout_rate=0.0)).eval()
    assert hf.config.dense_act_fn == "gelu"
    hf.save_pretrained(tmp_path)
    ours = build_model(checkpoint=tmp_path).eval()
    assert ours.config.act == "gelu"
    # the gated FFN on inputs whose pre-activations spread over [-3, 3], where the two GELUs differ by ~1e-3
    x = torch.randn(2, 5, 16) * 10
    with torch.no_grad():
        expected = hf.encoder.block[0].layer[1].DenseReluDense(x)
        got = ours.encoder_layers[0].ffn(x)
        ids, dec = torch.tensor([[5, 6, 7, 8, 1]]), torch.tensor([[0, 9, 10]])
        logits = hf(input_ids=ids, decoder_input_ids=dec).logits
        ours_logits = ours.decode(dec, ours.encode(ids))
    assert (got - expected).abs().max() <= 1e-6
    assert (ours_logits - logits).abs().max() <= 1e-5


def test_missing_oracle_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
    import bert4keras_common

    monkeypatch.setattr(bert4keras_common, "VENV_PYTHON", tmp_path / "absent" / "bin" / "python")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make bert4keras-oracle"):
        bert4keras_common.run_oracle(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="make bert4keras-oracle"):
        bert4keras_common.run_oracle(tmp_path)


def test_a_vocabulary_of_another_size_is_refused_before_reading_weights(tmp_path):
    """A vocab.txt whose rows differ from the config's vocab_size (the embedding rows) is refused naming both,
    before the checkpoint is read (here it does not even exist)."""
    import json

    from kexue.models.bert4keras import convert

    (tmp_path / "bert_config.json").write_text(json.dumps(B4K), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(30)) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt: 30 tokens, but .*bert_config.json gives vocab_size 50"):
        convert(tmp_path / "bert_config.json", tmp_path / "missing.ckpt", "bert", tmp_path / "out",
                vocab=tmp_path / "vocab.txt")
    assert not (tmp_path / "out").exists()
