"""kexue.tools.onnx_export against the PyTorch model it came from, and the bf16 / int8 rules of kexue.hardware.

Stated tolerances (same weights, real Chinese STS-B sentences of different lengths in padded batches):
- ONNX fp32 graph (ONNX Runtime) vs torch fp32: max |Δ hidden| over real tokens <= 1e-5 · max(1, max |hidden|);
- ONNX int8 (ONNX Runtime's dynamic quantization): mean-pooled sentence vectors keep a cosine >= 0.99 to fp32
  (the encoder budget of kexue.recipes.fastpath) and the graph differs from fp32 (it was quantized);
- bf16 (BFloat16Model, where the CPU has native bf16): outputs in fp32, cosine to fp32 >= 0.999 per sentence.
"""
from __future__ import annotations

import pytest
import torch

from families_common import quiet_one_thread  # noqa: F401  (autouse fixture)
from kexue import hardware
from kexue.data import shipped as datasets
from kexue.heads.pooling import pool
from kexue.models import build_model
from kexue.text.tokenizer import Tokenizer, build_vocab, pad_batch
from kexue.tools import onnx_export as ox
from kexue.tools.quantize import BFloat16Model, to_bf16

pytestmark = pytest.mark.skipif(ox.available() is not None, reason=str(ox.available()))


@pytest.fixture(scope="module")
def sentences():
    pairs = datasets.sts_zh("test")[:40]
    return [p.a for p in pairs] + [p.b for p in pairs]


@pytest.fixture(scope="module")
def encoder(sentences):
    torch.manual_seed(0)
    tok = Tokenizer(build_vocab(sentences))
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, max_position_embeddings=128, model_type="bert")
    return build_model(cfg).eval(), tok


def batches(tok, texts):
    """Padded batches of 1, 3, 8 and 20 sentences of different lengths, in their order."""
    out, start = [], 0
    for size in (1, 3, 8, 20):
        out.append(pad_batch([tok.encode(t, maxlen=96) for t in texts[start:start + size]], tok.pad_id))
        start += size
    return out


@pytest.fixture(scope="module")
def graphs(encoder, sentences, tmp_path_factory):
    model, tok = encoder
    d = tmp_path_factory.mktemp("onnx")
    example = pad_batch([tok.encode(t) for t in sentences[:2]], tok.pad_id)
    fp32 = ox.export_graph(ox.EncoderGraph(model), example, d / "model.onnx", ["hidden"], 128)
    return fp32, ox.quantize_graph(fp32, d / "model_int8.onnx")


def test_fp32_graph_equals_the_torch_encoder_on_real_padded_batches(encoder, sentences, graphs):
    model, tok = encoder
    graph = ox.OnnxGraph(graphs[0])
    assert graph.inputs == ("input_ids", "segment_ids", "attention_mask") and graph.outputs == ("hidden",)
    bs = batches(tok, sentences)
    assert len({b["input_ids"].shape[1] for b in bs}) == 4 and any((b["attention_mask"] == 0).any() for b in bs)
    check = ox.check_graph(graph, ox.EncoderGraph(model), bs, where=lambda b: b["attention_mask"])
    assert check["max_abs_diff"] <= 1e-5 * max(1.0, check["max_abs_reference"]), check
    # the encoder in ONNX Runtime is a drop-in for the Transformer: the same sentence vectors
    enc = ox.OnnxEncoder(graph, model.config)
    with torch.inference_mode():
        for b in bs:
            got = pool(enc(b["input_ids"], b["segment_ids"], b["attention_mask"]), b["attention_mask"])
            want = pool(model(b["input_ids"], b["segment_ids"], b["attention_mask"]), b["attention_mask"])
            assert (got - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))


def test_int8_graph_stays_within_the_budget(encoder, sentences, graphs):
    model, tok = encoder
    enc8 = ox.OnnxEncoder(ox.OnnxGraph(graphs[1]), model.config)
    with torch.inference_mode():
        for b in batches(tok, sentences):
            args = (b["input_ids"], b["segment_ids"], b["attention_mask"])
            v8, v = pool(enc8(*args), b["attention_mask"]), pool(model(*args), b["attention_mask"])
            cos = torch.nn.functional.cosine_similarity(v8, v, dim=-1)
            assert cos.min() >= 0.99, cos
            assert (v8 - v).abs().max() > 1e-5  # the weights were quantized
    assert graphs[1].stat().st_size < 0.5 * graphs[0].stat().st_size


def test_onnx_errors_name_what_is_wrong(encoder, sentences, graphs):
    model, tok = encoder
    graph = ox.OnnxGraph(graphs[0])
    b = pad_batch([tok.encode(t) for t in sentences[:2]], tok.pad_id)
    with pytest.raises(ValueError, match="needs the inputs segment_ids, attention_mask"):
        graph(input_ids=b["input_ids"])
    with pytest.raises(ValueError, match="output_hidden_states need the torch backend"):
        ox.OnnxEncoder(graph, model.config)(b["input_ids"], output_hidden_states=True)
    with pytest.raises(FileNotFoundError, match="kexue export onnx"):
        ox.OnnxGraph(graphs[0].parent / "missing.onnx")
    with pytest.raises(ValueError, match="at least \\[2, 2\\]"):
        ox.export_graph(ox.EncoderGraph(model), {k: v[:1] for k, v in b.items()}, graphs[0].parent / "x.onnx")
    with pytest.raises(ValueError, match="call module.eval"):
        ox.export_graph(ox.EncoderGraph(model).train(), b, graphs[0].parent / "x.onnx")
    model.eval()
    with pytest.raises(ValueError, match="kexue Transformer"):
        ox.EncoderGraph(torch.nn.Linear(2, 2))


@pytest.mark.skipif(not hardware.native_bf16(), reason="bf16 is emulated on this CPU")
def test_bf16_model_returns_fp32_close_to_fp32(encoder, sentences):
    model, tok = encoder
    m16 = to_bf16(model)
    assert all(p.dtype == torch.bfloat16 for p in m16.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the original is untouched
    with torch.inference_mode():
        for b in batches(tok, sentences):
            args = (b["input_ids"], b["segment_ids"], b["attention_mask"])
            out = m16(*args)
            assert out.hidden.dtype == torch.float32
            cos = torch.nn.functional.cosine_similarity(pool(out, b["attention_mask"]),
                                                        pool(model(*args), b["attention_mask"]), dim=-1)
            assert cos.min() >= 0.999, cos


def test_bf16_is_refused_where_emulated_and_int8_reports_vnni(monkeypatch, encoder):
    base = hardware.cpu_features()
    for native in (False, True):
        feats = hardware.CPUFeatures(base.name, base.torch_capability, True, True, native, native, native,
                                     avx_vnni=False, amx_int8=False)
        monkeypatch.setattr(hardware, "cpu_features", lambda feats=feats: feats)
        assert hardware.native_bf16() is native and hardware.native_int8() is native
        assert ("int8 VNNI" if native else "int8 no VNNI") in hardware.describe()
        assert "onnxruntime" in hardware.describe()
        if native:
            assert isinstance(to_bf16(encoder[0]), BFloat16Model)
        else:
            with pytest.raises(ValueError, match="bf16 is emulated on this cpu"):
                to_bf16(encoder[0])
    feats = hardware.CPUFeatures(base.name, base.torch_capability, True, False, False, False, False, avx_vnni=True)
    monkeypatch.setattr(hardware, "cpu_features", lambda: feats)
    assert hardware.native_int8() and not hardware.native_bf16()
