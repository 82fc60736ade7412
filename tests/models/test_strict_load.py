"""One strict-load report for every loader: an HF folder (``build_model`` / ``load_checkpoint``), a partial
load under a recipe's extra parts (``load_checkpoint_except``), a bert4keras TF checkpoint
(``state_from_tf``) and a plain state dict (``LoadReport.compare``, the task head of a saved folder) all end
in ``check_fit``: one ``CheckpointError`` whose message and ``report`` name every missing, unexpected and
mis-shaped tensor together."""
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
