"""One strict-load report for every loader: an HF folder (``build_model`` / ``load_checkpoint``), a partial
load under a recipe's extra parts (``load_checkpoint_except``), a bert4keras TF checkpoint
(``state_from_tf``) and a plain state dict (``LoadReport.compare``, the task head of a saved folder) all end
in ``check_fit``: one ``CheckpointError`` whose message and ``report`` name every missing, unexpected and
mis-shaped tensor together."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from kexue.models import CheckpointError, LoadReport, build_model, check_fit
from kexue.models.bert4keras import convert_config, state_from_tf
from kexue.models.checkpoints import load_checkpoint, load_checkpoint_except, save_pretrained

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16)
Q1, K0 = "encoder.layer.1.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight"


def _broken(tmp_path):
    """A saved BERT with one tensor renamed (missing + unexpected) and one cut short (mis-shaped)."""
    save_pretrained(build_model(TINY), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.1.attention.self.kwery.weight"] = state.pop(Q1)
    state[K0] = state[K0][:, :-1].contiguous()
    save_file(state, tmp_path / "model.safetensors")
    return tmp_path


def test_an_hf_folder_names_all_three_kinds_together(tmp_path):
    with pytest.raises(CheckpointError) as err:
        build_model(checkpoint=_broken(tmp_path))
    report, msg = err.value.report, str(err.value)
    assert report.missing == [Q1] and report.unexpected == ["encoder.layer.1.attention.self.kwery.weight"]
    assert report.mismatched == [f"{K0} checkpoint [32, 31] vs model [32, 32]"]
    assert msg.startswith(f"checkpoint {tmp_path} does not fit BERT: missing (1): {Q1}; unexpected (1): ")
    assert "; shape mismatch (1): " in msg
    loose = load_checkpoint(build_model(TINY), tmp_path, strict=False)  # the report without the error
    assert (loose.missing, loose.unexpected, loose.mismatched) == (report.missing, report.unexpected, report.mismatched)


def test_a_partial_load_forgives_only_what_may_be_missing(tmp_path, capsys):
    save_pretrained(build_model(TINY), tmp_path / "plain")
    pooled = build_model(TINY, with_pool=True)
    report = load_checkpoint_except(pooled, tmp_path / "plain", r"^pooler\.", "the pooler starts from scratch")
    assert report.missing == ["pooler.dense.weight", "pooler.dense.bias"]
    assert "the pooler starts from scratch" in capsys.readouterr().out
    with pytest.raises(CheckpointError) as err:  # anything else missing is not forgiven, nor unexpected ones
        load_checkpoint_except(build_model(TINY), _broken(tmp_path / "broken"), r"^pooler\.")
    assert err.value.report.missing == [Q1] and err.value.report.unexpected and err.value.report.mismatched
    save_pretrained(pooled, tmp_path / "pooled")  # a pooler the model does not read is skipped, not unexpected
    assert load_checkpoint_except(build_model(TINY), tmp_path / "pooled", r"^pooler\.").ok


def test_a_tf_checkpoint_reports_through_the_same_rule():
    config, _ = convert_config(dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32), "bert")
    model = build_model(config=config, family="bert")
    variables = {"bert/embeddings/word_embeddings": np.zeros((50, 16), np.float32),
                 "bert/embeddings/token_type_embeddings": np.zeros((3, 16), np.float32),
                 "bert/encoder/layer_0/attention/self/quer/kernel": np.zeros((16, 16), np.float32)}
    with pytest.raises(CheckpointError) as err:
        state_from_tf(model, variables, "bert", "ckpt")
    report = err.value.report
    assert str(err.value).startswith("ckpt does not fit bert4keras model 'bert': missing (")
    assert "bert/embeddings/position_embeddings" in report.missing and report.missing == sorted(report.missing)
    assert report.unexpected == ["bert/encoder/layer_0/attention/self/quer/kernel"]
    assert report.mismatched == ["bert/embeddings/token_type_embeddings [3, 16] vs embeddings.segment.weight [2, 16]"]


def test_same_named_state_dicts_compare_and_fit():
    want = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    given = {"a": torch.zeros(3, 2), "b": torch.ones(4), "d": torch.zeros(1)}
    report = LoadReport.compare(want, given)
    assert (report.missing, report.unexpected, report.mismatched) == (["c"], ["d"], ["a checkpoint [3, 2] vs model [2, 3]"])
    with pytest.raises(CheckpointError, match=r"^head.safetensors does not fit the task head: missing \(1\): c; "
                                              r"unexpected \(1\): d; shape mismatch \(1\): a checkpoint"):
        check_fit(report, "head.safetensors", "the task head")
    assert check_fit(LoadReport.compare(want, dict(want)), "x", "y").ok
    assert check_fit(LoadReport(missing=["p.pooler.w"]), "x", "y", may_miss=r"\.pooler\.").missing == ["p.pooler.w"]


# --- the weight-file reader: integer tensors and shards against their index ----------------------------------
def test_an_integer_tensor_is_not_cast_into_float_weights(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state[Q1] = state[Q1].round().to(torch.int32)  # same names and shapes: only the dtype is wrong
    save_file(state, tmp_path / "model.safetensors")
    model = build_model(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, tmp_path)
    assert str(err.value) == (f"{tmp_path / 'model.safetensors'}: tensor {Q1!r} is int32, but the model's "
                              "layers.1.attn.q.weight is float32: integer weights are not cast into a "
                              "float model (a quantized or wrongly saved checkpoint?)")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing was copied
    with pytest.raises(CheckpointError, match="is int32, but the model's"):
        build_model(checkpoint=tmp_path)
    # half precision is a precision, not a type: read as usual
    save_file({k: v.half() for k, v in load_file(tmp_path / "model.safetensors").items() if k != Q1}
              | {Q1: torch.zeros(32, 32, dtype=torch.float16)}, tmp_path / "model.safetensors")
    assert load_checkpoint(build_model(TINY), tmp_path).ok


def _sharded(tmp_path):
    save_pretrained(build_model(TINY), tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text(encoding="utf-8"))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3
    return index, shards


def test_every_shard_holds_exactly_what_its_index_maps_to_it(tmp_path):
    index, shards = _sharded(tmp_path)
    full = build_model(checkpoint=tmp_path).state_dict()  # the clean folder loads
    first, second = shards[0], shards[1]
    a, b = load_file(tmp_path / first), load_file(tmp_path / second)
    name = sorted(b)[0]  # a tensor of the second shard, copied (changed) into the first too: which one wins?
    save_file({**a, name: b[name] + 1}, tmp_path / first)
    with pytest.raises(CheckpointError) as err:
        build_model(checkpoint=tmp_path)
    assert str(err.value) == (f"{tmp_path / first}: tensor {name!r} is not mapped to this shard by "
                              f"model.safetensors.index.json (it maps it to {second})")
    save_file({**a, "stray.weight": torch.zeros(2)}, tmp_path / first)  # a tensor the index does not list
    with pytest.raises(CheckpointError, match=r"tensor 'stray.weight' is not mapped to this shard by "
                                              r"model.safetensors.index.json \(it does not list it\)"):
        build_model(checkpoint=tmp_path)
    gone = sorted(a)[0]
    save_file({k: v for k, v in a.items() if k != gone}, tmp_path / first)  # a tensor missing from its shard
    with pytest.raises(CheckpointError, match=f"{first}: no tensor {gone!r}, which model.safetensors.index.json "
                                              "maps to this shard"):
        build_model(checkpoint=tmp_path)
    save_file(a, tmp_path / first)
    assert all(torch.equal(v, build_model(checkpoint=tmp_path).state_dict()[k]) for k, v in full.items())


def test_a_shard_index_that_is_not_utf8_or_not_a_map_is_named(tmp_path):
    _sharded(tmp_path)
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b'{"weight_map": {"\xff": "x"}}')
    with pytest.raises(CheckpointError, match=f"{path}:1: not UTF-8 text"):
        build_model(checkpoint=tmp_path)
    path.write_text('{"weight_map": ["a"]}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="field 'weight_map' must map tensor names to shard file names"):
        build_model(checkpoint=tmp_path)
