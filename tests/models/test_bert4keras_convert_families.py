"""``kexue convert bert4keras``: nothing in the source is lost, and a checkpoint of another family is refused.

* every field of ``bert_config.json`` reaches ``config.json``: the dropout rates bert4keras reads
  (``dropout_rate`` / ``hidden_dropout_prob``, ``attention_dropout_rate`` / ``attention_probs_dropout_prob``)
  and the fields it does not (``directionality``, ``initializer_range`` ...), its build options
  (``with_pool``, ``with_mlm``, ``with_discriminator``) become kexue options;
* a checkpoint whose config keys or variables are another family's (``Bert4kerasNames.marks``) is refused
  with the reason and the ``--model`` that converts it: NEZHA's config as roformer / bert, ALBERT's
  shared variables as bert, ELECTRA's as bert, ALBERT's config as nezha;
* bert4keras options kexue does not compute are refused by name (``with_nsp``, ELECTRA's MLM / pooler,
  ALBERT with several groups);
* a bert4keras folder given where a kexue folder is expected names the command that converts it.

Unit tests need no TensorFlow; the end-to-end ones use the checkpoints of
``tests/oracles/bert4keras_encoders_oracle.py`` (cached; skipped without the oracle's virtualenv).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys

import pytest
import torch

from bert4keras_common import encoders_oracle  # noqa: F401  (a fixture)
from kexue.cli import main
from kexue.models import CheckpointError, build_model
from kexue.models.bert4keras import convert, convert_config, identify, read_tf_checkpoint, state_from_tf
from kexue.models.family import bert4keras_folder_hint

B4K = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
       "intermediate_size": 32, "hidden_act": "gelu", "max_position_embeddings": 20, "type_vocab_size": 2}


def test_dropout_rates_are_carried():
    config, _ = convert_config({**B4K, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2}, "bert")
    assert (config["hidden_dropout_prob"], config["attention_probs_dropout_prob"]) == (0.1, 0.2)
    # bert4keras's own names win over the BERT ones, as in build_transformer_model; absent means 0
    config, _ = convert_config({**B4K, "hidden_dropout_prob": 0.1, "dropout_rate": 0.3,
                                "attention_dropout_rate": 0.05}, "nezha")
    assert (config["hidden_dropout_prob"], config["attention_probs_dropout_prob"]) == (0.3, 0.05)
    config, _ = convert_config(B4K, "albert")
    assert (config["hidden_dropout_prob"], config["attention_probs_dropout_prob"]) == (0.0, 0.0)
    config, _ = convert_config({**B4K, "hidden_act": ["gelu", "linear"], "dropout_rate": 0.1}, "t5.1.1")
    assert config["dropout_rate"] == 0.1


def test_every_field_is_carried_and_options_become_options():
    extra = {"directionality": "bidi", "initializer_range": 0.02, "pooler_fc_size": 768, "max_relative_position": 32}
    config, options = convert_config({**B4K, **extra, "with_pool": "linear", "with_mlm": True,
                                      "segment_vocab_size": 0, "max_position": 30}, "nezha")
    assert all(config[k] == v for k, v in extra.items())
    assert options == {"with_pool": True, "pool_act": "linear", "with_mlm": True}
    assert config["type_vocab_size"] == 0 and config["max_position_embeddings"] == 30
    assert "with_pool" not in config and "segment_vocab_size" not in config and "max_position" not in config
    model = build_model(config, family="nezha", **options)
    assert model.config.max_relative_position == 32 and model.embeddings.segment is None
    assert model.config.extra["directionality"] == "bidi"
    _, options = convert_config({**B4K, "with_discriminator": True}, "electra")
    assert options == {"with_discriminator": True}
    unshared, _ = convert_config({**B4K, "embedding_size": 8}, "albert_unshared")
    assert (unshared["num_hidden_groups"], unshared["inner_group_num"], unshared["embedding_size"]) == (2, 1, 8)
    assert convert_config(B4K, "albert")[0]["num_hidden_groups"] == 1
    assert convert_config(B4K, "electra")[0]["embedding_size"] == 16  # said, not ElectraConfig's 128


@pytest.mark.parametrize("model,b4k,field", [
    ("bert", {"with_nsp": True}, "with_nsp"),
    ("albert", {"num_hidden_groups": 2}, "num_hidden_groups"),
    ("albert_unshared", {"inner_group_num": 2}, "inner_group_num"),
    ("electra", {"with_mlm": True}, "with_mlm"),
    ("electra", {"with_pool": True}, "with_pool"),
    ("bert", {"with_discriminator": True}, "with_discriminator"),
])
def test_bert4keras_options_kexue_does_not_compute_are_refused(model, b4k, field):
    with pytest.raises(ValueError, match=field):
        convert_config({**B4K, **b4k}, model)


NEZHA_CONFIG = {**B4K, "max_relative_position": 64}
ALBERT_VARIABLES = ["bert/embeddings/word_embeddings",
                    "bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel"]
ELECTRA_VARIABLES = ["electra/embeddings/word_embeddings", "electra/encoder/layer_0/attention/self/query/kernel"]
BERT_VARIABLES = ["bert/embeddings/word_embeddings", "bert/encoder/layer_0/attention/self/query/kernel"]


@pytest.mark.parametrize("b4k,variables,model,family,reason", [
    (NEZHA_CONFIG, BERT_VARIABLES, "roformer", "nezha", "'max_relative_position'"),
    (NEZHA_CONFIG, BERT_VARIABLES, "bert", "nezha", "'max_relative_position'"),
    ({**B4K, "use_relative_position": True}, BERT_VARIABLES, "roberta", "nezha", "'use_relative_position'"),
    (B4K, ALBERT_VARIABLES, "bert", "albert", "group_0/inner_group_0"),
    (B4K, ALBERT_VARIABLES, "roformer", "albert", "group_0/inner_group_0"),
    ({**B4K, "num_hidden_groups": 1, "inner_group_num": 1}, BERT_VARIABLES, "nezha", "albert", "'num_hidden_groups'"),
    (B4K, ELECTRA_VARIABLES, "bert", "electra", "electra/embeddings/word_embeddings"),
    (B4K, ELECTRA_VARIABLES, "albert", "electra", "electra/embeddings/word_embeddings"),
])
def test_another_familys_checkpoint_is_refused_with_the_reason(b4k, variables, model, family, reason):
    with pytest.raises(ValueError) as err:
        identify(b4k, variables, model, "bert_config.json")
    msg = str(err.value)
    assert f"is a {family} checkpoint, not {model}'s" in msg and reason in msg and f"--model {family}" in msg


def test_a_checkpoint_of_its_own_family_passes():
    identify(NEZHA_CONFIG, BERT_VARIABLES, "nezha", "c")
    identify(B4K, ALBERT_VARIABLES, "albert_unshared", "c")
    identify(B4K, ELECTRA_VARIABLES, "electra", "c")
    identify(B4K, BERT_VARIABLES, "roberta", "c")


def _fake_bert4keras_folder(folder, config=None):
    folder.mkdir()
    (folder / "bert_config.json").write_text(json.dumps(config or B4K))
    (folder / "bert_model.ckpt.index").write_bytes(b"not an index")  # unreadable: no --model is named
    return folder


def test_a_bert4keras_folder_as_checkpoint_names_the_command(tmp_path):
    folder = _fake_bert4keras_folder(tmp_path / "chinese_bert")
    with pytest.raises(FileNotFoundError) as err:
        build_model(checkpoint=folder)
    msg = str(err.value)
    assert "\n" not in msg and "holds a bert4keras TF checkpoint (bert_config.json, bert_model.ckpt.index)" in msg
    assert f"kexue convert bert4keras --config {folder / 'bert_config.json'} --checkpoint {folder / 'bert_model.ckpt'} " \
           "--model {bert,roberta," in msg
    # the family is named when the config identifies it
    nezha = _fake_bert4keras_folder(tmp_path / "nezha", NEZHA_CONFIG)
    assert "--model nezha --out DIR" in bert4keras_folder_hint(nezha)
    assert bert4keras_folder_hint(tmp_path) is None and bert4keras_folder_hint(tmp_path / "absent") is None
    # the commands' --checkpoint / model arguments and a saved folder's predictor say the same
    from kexue.recipes import args as at
    from kexue.recipes.predictor import load

    with pytest.raises(argparse.ArgumentTypeError, match="--model nezha"):
        at.model_dir(str(nezha))
    with pytest.raises(ValueError, match="kexue convert bert4keras"):
        load(nezha)


def test_a_real_folder_names_its_model(encoders_oracle, tmp_path):
    folder, _, _ = encoders_oracle
    for name, model in (("albert", "albert"), ("electra", "electra"), ("nezha", "nezha")):
        copy = shutil.copytree(folder / name, tmp_path / name)
        (copy / "outputs.npz").unlink()
        with pytest.raises(FileNotFoundError, match=f"--model {model} --out DIR"):
            build_model(checkpoint=copy)


def _convert(folder, name, model, out, *flags):
    return main(["convert", "bert4keras", "--config", str(folder / name / "bert_config.json"), "--checkpoint",
                 str(folder / name / "model.ckpt"), "--model", model, *flags, "--out", str(out)])


def test_converted_config_has_the_sources_rates_and_fields(encoders_oracle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    folder, _, _ = encoders_oracle
    source = json.loads((folder / "roberta" / "bert_config.json").read_text())
    source.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.15, directionality="bidi",
                  initializer_range=0.02, pooler_type="first_token_transform")
    (tmp_path / "bert_config.json").write_text(json.dumps(source))
    out = tmp_path / "out"
    assert convert(tmp_path / "bert_config.json", folder / "roberta" / "model.ckpt", "roberta", out,
                   with_pool=True) == out
    written = json.loads((out / "config.json").read_text())
    assert written["hidden_dropout_prob"] == 0.1 and written["attention_probs_dropout_prob"] == 0.15
    assert all(written[k] == source[k] for k in ("directionality", "initializer_range", "pooler_type", "vocab_size"))
    model = build_model(checkpoint=out).train()
    assert model.layers[0].dropout.p == 0.1 and model.layers[0].attn.dropout == 0.15
    assert model.embeddings.dropout.p == 0.1


@pytest.mark.parametrize("name,model,reason", [("nezha", "roformer", "max_relative_position"),
                                               ("nezha", "bert", "max_relative_position"),
                                               ("albert", "bert", "group_0/inner_group_0"),
                                               ("electra", "roberta", "electra/")])
def test_the_cli_refuses_another_familys_checkpoint(encoders_oracle, tmp_path, capsys, monkeypatch, name, model, reason):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    folder, _, _ = encoders_oracle
    out = tmp_path / "out"
    assert _convert(folder, name, model, out) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and reason in err and f"--model {name}" in err


def test_albert_unshared_copies_are_all_or_none(encoders_oracle):
    """bert4keras writes an unshared model's layer i as <name>_i; a checkpoint holding copies for some
    tensors only is refused rather than read half from copies, half from the shared variables."""
    folder, converted, _ = encoders_oracle
    variables = read_tf_checkpoint(folder / "albert_unshared" / "model.ckpt")
    copies = sorted(v for v in variables if v.endswith("_1"))
    assert copies and all(v[:-2] in variables for v in copies)
    model = build_model(checkpoint=converted / "albert_unshared")
    state = state_from_tf(model, variables, "albert_unshared")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    del variables[copies[0]]
    with pytest.raises(CheckpointError, match="per-layer copies for some tensors only"):
        state_from_tf(model, variables, "albert_unshared")
    # a 3-layer model on the 2-layer copies: layer 2's copies are missing while layer 1's exist
    variables = read_tf_checkpoint(folder / "albert_unshared" / "model.ckpt")
    deeper = build_model({**json.loads((converted / "albert_unshared" / "config.json").read_text()),
                          "num_hidden_layers": 3, "num_hidden_groups": 3})
    with pytest.raises(CheckpointError):
        state_from_tf(deeper, variables, "albert_unshared")


def test_albert_without_embedding_mapping_maps_by_the_identity():
    """bert4keras's ALBERT with embedding_size = hidden_size has no Embedding-Mapping; kexue's (as
    transformers') always maps E -> H, so the converter supplies the identity and a zero bias."""
    from kexue.models.albert import bert4keras_rules
    from kexue.models.bert4keras import complete_variables

    config, _ = convert_config(B4K, "albert")
    model = build_model(config, family="albert")
    rules = bert4keras_rules("albert")
    variables = {}
    for name, param in model.state_dict().items():
        ours, theirs = next((o, t) for o, t in rules if re.fullmatch(o, name))
        value = param.t() if param.dim() == 2 and not name.endswith(("token.weight", "segment.weight",
                                                                    "position.weight")) else param
        variables[theirs.format(*(int(g) for g in re.fullmatch(ours, name).groups()))] = value.numpy()
    del variables["bert/encoder/embedding_hidden_mapping_in/kernel"], variables["bert/encoder/embedding_hidden_mapping_in/bias"]
    with pytest.raises(CheckpointError, match="embedding_hidden_mapping_in"):
        state_from_tf(model, variables, "albert")
    state = state_from_tf(model, complete_variables(variables, config, "albert"), "albert")
    assert torch.equal(state["embeddings.project.weight"], torch.eye(16))
    assert not state["embeddings.project.bias"].any()
