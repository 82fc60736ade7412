"""``kexue export onnx`` and the inference path ``kexue.load`` picks (kexue.recipes.export / fastpath).

Every check runs real sentences (Chinese STS-B, People's Daily) of different lengths in padded batches
through the saved folder's PyTorch model and through each other path, same weights. Stated tolerances:
- fp32 paths (ONNX Runtime fp32): graph outputs max |Δ| <= 1e-5 · max(1, max |output|) over real tokens;
  predictions: sentence vectors / class probabilities within 1e-5, identical labels and entities;
- bf16 (where the CPU has it natively): sentence vectors cosine >= 0.999 to fp32, identical labels;
- int8 (torch.ao and ONNX Runtime): sentence vectors cosine >= 0.99 to fp32.
"""
from __future__ import annotations

import json

import pytest
import torch

import kexue
from kexue import hardware
from kexue.cli import main as cli
from kexue.data import shipped as datasets
from kexue.models import build_model
from kexue.models.checkpoints import save_pretrained
from kexue.recipes import TASKS
from kexue.recipes import graphs as ex
from kexue.recipes import fastpath as fp
from kexue.text.tokenizer import Tokenizer, build_vocab
from kexue.tools import onnx_export as ox

pytestmark = pytest.mark.skipif(ox.available() is not None, reason=str(ox.available()))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXUE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sentences():
    pairs = datasets.sts_zh("test")[:30]
    return [p.a for p in pairs] + [p.b for p in pairs]


def write_encoder(directory, texts, seed=0):
    torch.manual_seed(seed)
    tok = Tokenizer(build_vocab(texts))
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, max_position_embeddings=128, model_type="bert")
    save_pretrained(build_model(cfg).eval(), directory, tok)
    return directory


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, sentences):
    out = write_encoder(tmp_path_factory.mktemp("encoder") / "model", sentences + list(ex.SAMPLE_TEXTS))
    assert cli(["export", "onnx", str(out), "--threads", "1"]) == 0
    return out


def train(tmp_path_factory, name, *args):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp(name) / "model"
    assert cli([name, "--out", str(out), "--no-progress", "--epochs", "1", *args]) == 0
    return out


@pytest.fixture(scope="module")
def ner_dirs(tmp_path_factory):
    dirs = {head: train(tmp_path_factory, "ner", "--head", head, "--limit", "24", "--maxlen", "48")
            for head in ("globalpointer", "crf")}
    for d in dirs.values():
        ex.export_folder(kexue.load(d, backend="torch"), d, d / "onnx")
    return dirs


def vectors(predictor, texts):
    return torch.tensor([r["embedding"] for r in predictor.predict(texts)])


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def test_encoder_export_equals_pytorch_on_real_padded_batches(encoder_dir, sentences):
    manifest = json.loads((encoder_dir / "onnx" / ex.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["task"] == "encoder" and manifest["files"] == {"fp32": "model.onnx", "int8": "model_int8.onnx"}
    assert manifest["checks"]["fp32"]["ok"] and manifest["checks"]["int8"]["within_budget"]
    assert set(manifest["source"]) == {"config.json", "model.safetensors", "vocab.txt"}
    p = kexue.load(encoder_dir, backend="torch")
    spec = ex.task_graph("encoder")
    bs = ex.check_batches(spec, p, sentences)  # 1, 3, 5 and 51 sentences: different lengths, padded
    assert len({tuple(b["input_ids"].shape) for b in bs}) == 4
    check = ox.check_graph(ox.OnnxGraph(encoder_dir / "onnx" / ex.FP32_FILE), spec.module(p), bs, spec.where)
    assert check["max_abs_diff"] <= 1e-5 * max(1.0, check["max_abs_reference"]), check
    # int8 within the budget on real sentences, and really quantized
    check8 = ox.check_graph(ox.OnnxGraph(encoder_dir / "onnx" / ex.INT8_FILE), spec.module(p), bs, spec.where)
    assert check8["max_abs_diff"] > 1e-4
    ref = vectors(p, sentences)
    v8 = vectors(kexue.load(encoder_dir, backend="onnxruntime", precision="int8"), sentences)
    assert torch.nn.functional.cosine_similarity(ref, v8).min() >= 0.99


@pytest.mark.parametrize("head", ["globalpointer", "crf"])
def test_ner_export_is_one_graph_and_predicts_the_same_entities(ner_dirs, head):
    d = ner_dirs[head]
    from kexue.io import check_folder

    unit = check_folder(d, required=True)  # the recipe's folder is one unit: the graphs joined it, hashed
    assert {f"onnx/{ex.FP32_FILE}", f"onnx/{ex.INT8_FILE}", f"onnx/{ex.MANIFEST}"} <= set(unit["files"])
    manifest = json.loads((d / "onnx" / ex.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["inputs"] == (["input_ids", "attention_mask"] if head == "crf" else
                                  ["input_ids", "attention_mask", "span_mask"])
    texts = ["".join(c) for c, _ in datasets.ner_peoples_daily("test")[:40]]
    torch_p, ort_p = kexue.load(d, backend="torch"), kexue.load(d, backend="onnxruntime")
    assert ort_p.path.name == "onnxruntime fp32" and torch_p.path.name == "torch fp32"
    spec = ex.task_graph("ner")
    check = ox.check_graph(ort_p.tagger.graph, spec.module(torch_p), [
        {n: b[n] for n in spec.inputs(torch_p)} for b in ex.check_batches(spec, torch_p, texts)], spec.where)
    assert check["max_abs_diff"] <= 1e-5 * max(1.0, check["max_abs_reference"]), check
    assert ort_p.predict(texts) == torch_p.predict(texts)
    # the default load times both fp32 engines; ONNX Runtime's is admitted on its span scores (1e-5 of their scale)
    auto = kexue.load(d).path.candidates["onnxruntime fp32"]
    assert auto["admitted"] and auto["graph_max_abs_diff"] <= auto["graph_tolerance"] <= 1e-5 * max(1.0, check["max_abs_reference"]) * 10


def test_classify_export_predicts_the_same_probabilities(tmp_path_factory):
    d = train(tmp_path_factory, "classify", "--limit", "24", "--maxlen", "48")
    assert cli(["export", "onnx", str(d), "--out", str(d / "graphs"), "--no-int8"]) == 0
    assert sorted(p.name for p in (d / "graphs").iterdir()) == [ex.MANIFEST, ex.FP32_FILE]
    texts = [p.a for p in datasets.sts_zh("valid")[:24]]
    want = kexue.load(d, backend="torch").predict(texts)
    # --out elsewhere: kexue.load finds no export in the folder and exports into the cache on request
    got = kexue.load(d, backend="onnxruntime").predict(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["probabilities"][k] - w["probabilities"][k]) for g, w in zip(got, want)
               for k in w["probabilities"]) <= 1e-5
    assert (fp.cache_dir() / "onnx").is_dir()


def test_classify_batches_by_length_and_answers_in_input_order(tmp_path_factory):
    d = train(tmp_path_factory, "classify", "--limit", "16", "--maxlen", "64")
    p = kexue.load(d, backend="torch")
    texts = [p.a for p in datasets.sts_zh("valid")[:20]] + list(ex.SAMPLE_TEXTS)
    calls = []
    handle = p.classifier.register_forward_pre_hook(lambda m, args: calls.append(args[0]["attention_mask"].sum(1)))
    together = p.predict(texts)
    handle.remove()
    assert len(calls) == 1 and calls[0].tolist() == sorted(calls[0].tolist())  # one bucket, sorted by length
    one_by_one = [p.predict([t])[0] for t in texts]
    assert [r["text"] for r in together] == texts
    assert [r["label"] for r in together] == [r["label"] for r in one_by_one]
    assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(together, one_by_one)
               for k in a["probabilities"]) <= 1e-5


def test_refused_tasks_are_refused_by_name(tmp_path, capsys):
    assert set(TASKS) == set(ex.GRAPHS) | set(ex.REFUSED)
    cfg = dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=32, model_type="gpt")
    tok = Tokenizer(build_vocab(["今天天气很好"]))
    save_pretrained(build_model({**cfg, "vocab_size": tok.vocab_size}, family="gpt", application="lm").eval(),
                    tmp_path / "lm", tok)
    assert cli(["export", "onnx", str(tmp_path / "lm")]) == 2
    err = capsys.readouterr().err
    assert "generate models are not exported to ONNX: text generation decodes token by token" in err
    assert not (tmp_path / "lm" / "onnx").exists()
    with pytest.raises(ValueError, match="generate models are not exported to ONNX"):
        kexue.load(tmp_path / "lm", backend="onnxruntime")
    with pytest.raises(ValueError, match="precision 'bf16' serves classify, encoder, ner models"):
        kexue.load(tmp_path / "lm", precision="bf16")
    assert kexue.load(tmp_path / "lm", precision="auto").path.name == "torch fp32"  # no budget for generation


# --------------------------------------------------------------------------------------------------
# The path kexue.load picks
# --------------------------------------------------------------------------------------------------
def test_default_is_fp32_and_the_fastest_exact_path(encoder_dir, sentences):
    p = kexue.load(encoder_dir)
    assert p.path.precision == "fp32"
    assert set(p.path.candidates) == {"torch fp32", "onnxruntime fp32"}  # never a lower precision by default
    assert all(c["admitted"] and c["max_abs_diff"] <= 1e-5 for c in p.path.candidates.values())
    graph = p.path.candidates["onnxruntime fp32"]
    assert graph["graph_max_abs_diff"] <= graph["graph_tolerance"] <= 1e-5 * 10  # hidden states of magnitude < 10
    fastest = min(p.path.candidates, key=lambda n: p.path.candidates[n]["seconds"])
    assert p.path.name == fastest and "fastest of 2 paths" in p.path.reason
    assert (vectors(p, sentences) - vectors(kexue.load(encoder_dir, backend="torch"), sentences)).abs().max() <= 1e-5
    again = kexue.load(encoder_dir)  # the calibration is cached per machine and model files
    assert again.path.name == p.path.name and again.path.reason.endswith("(cached)")


def test_overrides_are_honoured_and_each_path_is_close_to_fp32(encoder_dir, sentences):
    ref = vectors(kexue.load(encoder_dir, backend="torch"), sentences)
    paths = [("torch", "fp32"), ("onnxruntime", "fp32"), ("torch", "int8"), ("onnxruntime", "int8")]
    paths += [("torch", "bf16")] if hardware.native_bf16() else []
    for backend, precision in paths:
        p = kexue.load(encoder_dir, backend=backend, precision=precision)
        assert p.path.name == f"{backend} {precision}" and p.path.reason == "the only path the request allows"
        engine = type(p.encoder).__name__
        assert engine == {"onnxruntime": "OnnxEncoder"}.get(backend, {"bf16": "BFloat16Model"}.get(precision, "BERT"))
        v = vectors(p, sentences)
        cos = torch.nn.functional.cosine_similarity(v, ref).min()
        if precision == "fp32":
            assert (v - ref).abs().max() <= 1e-5
        else:
            assert cos >= {"bf16": 0.999, "int8": 0.99}[precision], (backend, precision, cos)
            assert (v - ref).abs().max() > 1e-6
    assert any(type(m).__module__.startswith("torch.ao") for m in kexue.load(encoder_dir, quantize="int8").encoder.modules())
    int8 = kexue.load(encoder_dir, precision="int8")  # both int8 engines timed, the faster one runs
    assert set(int8.path.candidates) == {"torch int8", "onnxruntime int8"} and int8.path.precision == "int8"
    for kwargs, words in [({"backend": "tensorrt"}, "backend 'tensorrt': expected one of auto, torch, onnxruntime"),
                          ({"precision": "fp16"}, "precision 'fp16': expected one of"),
                          ({"backend": "onnxruntime", "precision": "bf16"}, "no bf16 path"),
                          ({"quantize": "int8", "precision": "bf16"}, "give it alone")]:
        with pytest.raises(ValueError, match=words):
            kexue.load(encoder_dir, **kwargs)


def test_bf16_only_where_native(encoder_dir, monkeypatch):
    base = hardware.cpu_features()
    emulated = hardware.CPUFeatures(base.name, base.torch_capability, True, True, False, False, False)
    monkeypatch.setattr(hardware, "cpu_features", lambda: emulated)
    with pytest.raises(ValueError, match="precision 'bf16': this CPU has no native bf16"):
        kexue.load(encoder_dir, precision="bf16")
    p = kexue.load(encoder_dir, backend="torch", precision="auto")  # no VNNI, no bf16: fp32 alone
    assert p.path.name == "torch fp32" and p.path.candidates == {}


def test_auto_precision_admits_only_paths_within_the_budget(encoder_dir, monkeypatch):
    monkeypatch.setitem(ex.BUDGET, "encoder", {"cosine_min": 1.5})  # no lower precision can meet this
    p = kexue.load(encoder_dir, precision="auto")
    lower = {n: c for n, c in p.path.candidates.items() if not n.endswith("fp32")}
    assert p.path.precision == "fp32" and "not admitted" in p.path.reason
    assert lower and not any(c["admitted"] for c in lower.values())
    monkeypatch.setitem(ex.BUDGET, "encoder", {"cosine_min": -1.0})  # every path is within this one
    p = kexue.load(encoder_dir, precision="auto")
    assert all(c["admitted"] for c in p.path.candidates.values())
    assert p.path.name == min(p.path.candidates, key=lambda n: p.path.candidates[n]["seconds"])


def test_a_path_that_fails_is_reported_not_chosen(encoder_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(encoder_dir, d)
    (d / "onnx" / ex.INT8_FILE).write_bytes(b"not a graph")
    p = kexue.load(d, precision="int8")
    assert p.path.name == "torch int8" and "failed" in p.path.reason
    assert not p.path.candidates["onnxruntime int8"]["admitted"] and "error" in p.path.candidates["onnxruntime int8"]
    with pytest.raises(Exception):
        kexue.load(d, backend="onnxruntime", precision="int8")  # asked for by name: the error itself


def test_a_stale_export_is_not_used(tmp_path, sentences):
    d = write_encoder(tmp_path / "model", sentences + list(ex.SAMPLE_TEXTS))
    ex.export_folder(kexue.load(d, backend="torch"), d, d / "onnx", int8=False)
    assert fp.find_export(kexue.load(d, backend="torch"), d) == d / "onnx"
    write_encoder(d, sentences + list(ex.SAMPLE_TEXTS), seed=1)  # new weights, same shapes and sizes
    assert fp.find_export(kexue.load(d, backend="torch"), d) is None
    assert kexue.load(d).path.name == "torch fp32"


def test_cli_flags_pick_the_path(encoder_dir, tmp_path, capsys):
    texts = ["今天天气很好。", "我想订一张明天上午从北京到上海的高铁票。"]
    rows = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.jsonl"
        assert cli(["embed", str(encoder_dir), *texts, "--backend", backend, "--output", str(out)]) == 0
        assert f"inference path {backend} fp32" in capsys.readouterr().err
        rows[backend] = [json.loads(line)["embedding"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert (torch.tensor(rows["torch"]) - torch.tensor(rows["onnxruntime"])).abs().max() <= 1e-5
    assert cli(["embed", str(encoder_dir), "x", "--int8", "--precision", "bf16"]) == 2
    assert "--int8 contradicts --precision bf16" in capsys.readouterr().err


def test_serve_runs_the_path_asked_for(encoder_dir, capsys):
    """``kexue serve --backend onnxruntime``: the server answers with the ONNX Runtime graph's vectors (equal
    to torch's to 1e-5), says which path it runs, and refuses what the path cannot do by name."""
    from fastapi.testclient import TestClient

    from kexue.cli.serve import app_from_args, parser

    texts = ["今天天气很好。", "我想订一张明天上午从北京到上海的高铁票。", "好"]
    answers = {}
    for backend in ("torch", "onnxruntime"):
        app = app_from_args(parser().parse_args([str(encoder_dir), "--backend", backend, "--threads", "1"]))
        assert app.state.served.predictor.path.name == f"{backend} fp32"
        with TestClient(app) as client:
            r = client.post("/predict", json={"inputs": texts})
            assert r.status_code == 200
            answers[backend] = torch.tensor([o["embedding"] for o in r.json()["outputs"]])
        assert f"inference path {backend} fp32" in capsys.readouterr().err
    assert (answers["torch"] - answers["onnxruntime"]).abs().max() <= 1e-5
    with pytest.raises(Exception, match="--int8 contradicts --precision bf16"):
        app_from_args(parser().parse_args([str(encoder_dir), "--int8", "--precision", "bf16"]))
