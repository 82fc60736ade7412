"""kexue.tools.quantize and kexue.hardware: int8 / layout / compiled paths against fp32 and direct oracles.

Stated tolerances (fp32 reference, same weights):
- ``fp32-decode`` ([in, out] weights) and ``compile_model``: max |Δ| <= 1e-4 (fp32 summation order only);
- ``int8-weight-only``: relative error ||Δ|| / ||y|| <= 2 %; its linear equals x (W_q s)ᵀ + b to 1e-5;
- ``int8`` (dynamic, activations quantized too): relative error <= 5 %;
- real all-MiniLM-L6-v2 sentence vectors, cosine to fp32: int8 min >= 0.95 and mean >= 0.97 (its 7-bit
  per-tensor activations cost this much; STS-B Spearman is in experiments/int8_quality.py); int8 smoothed
  (SmoothQuant, calibrated on other sentences) min >= 0.98 and mean >= 0.99; weight-only min >= 0.999
  and mean >= 0.9995.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from families_common import needs_cxx, quiet_one_thread  # noqa: F401  (autouse fixture)
from kexue import hardware
from kexue.generation import beam_search, decoding_state, greedy
from kexue.models import build_model
from kexue.models.t5 import T5, T5Config
from kexue.tools.quantize import InOutLinear, Int8WeightOnlyLinear, SmoothedLinear, compile_model, quantize, quantize_per_channel, smoothing_scales

TOL = {"fp32-decode": None, "int8-weight-only": 0.02, "int8": 0.05}  # None: max |Δ| <= 1e-4



def small(family: str):
    torch.manual_seed(0)
    if family == "t5":
        cfg = T5Config(vocab_size=300, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_heads=4, dropout_rate=0.0)
        return T5(cfg).eval()
    application = {"gpt": "lm", "unilm": "unilm"}.get(family, "encoder")
    cfg = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
               max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
               model_type="bert" if family == "unilm" else family)
    return build_model(cfg, application=application, with_mlm=family in ("bert", "unilm")).eval()


def outputs(model, family: str, ids: torch.Tensor) -> torch.Tensor:
    """The tensor a user reads: logits where the model has a head, else the last hidden states."""
    with torch.inference_mode():
        if family == "t5":
            return model(ids, ids[:, :5])
        segments = torch.zeros_like(ids) if family != "unilm" else (torch.arange(ids.shape[1]) >= 6).long().expand_as(ids)
        out = model(ids, None if family == "gpt" else segments)
        return out.logits if out.logits is not None else out.hidden


def check_close(got: torch.Tensor, want: torch.Tensor, mode: str) -> None:
    if TOL[mode] is None:
        assert (got - want).abs().max() <= 1e-4, mode
    else:
        rel = float((got - want).norm() / want.norm())
        assert rel <= TOL[mode], f"{mode}: relative error {rel:.4f}"
        assert rel > 0, f"{mode}: identical output, the weights were not transformed"


FAMILIES = ["bert", "roformer", "roformer_v2", "gpt", "unilm", "t5"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", list(TOL))
def test_modes_stay_close_to_fp32_on_every_family(family, mode):
    model = small(family)
    ids = torch.randint(1, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    want = outputs(model, family, ids)
    q = quantize(model, mode)
    check_close(outputs(q, family, ids), want, mode)
    assert outputs(model, family, ids).equal(want), "quantize must not change the original model"
    assert not any(type(m) is torch.nn.Linear for m in q.modules())


@pytest.mark.parametrize("family", ["gpt", "unilm", "t5"])
def test_decoding_with_quantized_models(family):
    """fp32-decode is exact, so greedy and beam outputs equal fp32's; int8 modes decode through the
    same protocol with logits close to fp32's at every step."""
    model = small(family)
    ids = torch.randint(5, 300, (2, 6), generator=torch.Generator().manual_seed(2))
    ref_g, ref_b = greedy(decoding_state(model, ids), 8), beam_search(decoding_state(model, ids), 8, None, 3)
    q = quantize(model, "fp32-decode")
    assert greedy(decoding_state(q, ids), 8) == ref_g
    assert beam_search(decoding_state(q, ids), 8, None, 3) == ref_b
    for mode in ("int8", "int8-weight-only"):
        qs, fs = decoding_state(quantize(model, mode), ids), decoding_state(model, ids)
        with torch.inference_mode():
            got, want = qs.prefill(), fs.prefill()
            for _ in range(4):
                check_close(got, want, mode)
                tok = want.argmax(-1)  # the same tokens on both sides
                got, want = qs.step(tok), fs.step(tok)


def test_int8_weight_only_linear_equals_dequantised_matmul():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    lin.weight.data[3] = 0  # an all-zero row must not divide by zero
    q, s = quantize_per_channel(lin.weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    # the rounding bound of symmetric per-row quantization: |W - s q| <= s / 2
    assert ((lin.weight - q.float() * s[:, None]).abs() <= s[:, None] / 2 + 1e-7).all()
    mod = Int8WeightOnlyLinear.from_weight(lin.weight, lin.bias)
    x = torch.randn(3, 7, 96)
    oracle = x.double() @ (q.double() * s.double()[:, None]).t() + lin.bias.double()
    assert torch.allclose(mod(x).double(), oracle, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="float32"):
        mod(x.double())


def test_in_out_linear_equals_linear():
    lin = torch.nn.Linear(33, 17)
    x = torch.randn(4, 33)
    assert torch.allclose(InOutLinear(lin.weight, lin.bias)(x), lin(x), atol=1e-6)


def test_minilm_real_weights_int8_sentence_vectors():
    from kexue.data.shipped import sts_en
    from kexue.models.pretrained import embed, minilm

    model, tok = minilm()
    texts = [p.a for p in sts_en("test")[:16]]
    ref = embed(model, tok, texts)
    for mode, (floor, mean) in [("int8", (0.95, 0.97)), ("int8-weight-only", (0.999, 0.9995))]:
        cos = F.cosine_similarity(embed(quantize(model, mode), tok, texts), ref)
        assert float(cos.min()) >= floor and float(cos.mean()) >= mean, (mode, float(cos.min()), float(cos.mean()))
        assert float(cos.min()) < 1 - 1e-7
    assert (embed(quantize(model, "fp32-decode"), tok, texts) - ref).abs().max() <= 1e-5
    calib = [p.a for p in sts_en("train")[:48]]
    smoothed = quantize(model, "int8", calibration=lambda m: embed(m, tok, calib))
    assert sum(isinstance(m, SmoothedLinear) for m in smoothed.modules()) == 6 * 6  # q k v o up down per layer
    cos = F.cosine_similarity(embed(smoothed, tok, texts), ref)
    assert float(cos.min()) >= 0.98 and float(cos.mean()) >= 0.99, (float(cos.min()), float(cos.mean()))


def test_smoothing_is_an_identity_before_quantization():
    """(x / s)(W s)ᵀ = x Wᵀ in exact arithmetic; with an identity 'quantizer' the smoothed layer is the layer."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 10)
    x = torch.randn(5, 24) * torch.linspace(0.1, 30, 24)  # outlier channels
    s = smoothing_scales(x.abs().amax(0), lin.weight, 0.7)
    w = lin.weight.detach()
    want = (x.abs().amax(0) ** 0.7 / w.abs().amax(0) ** 0.3)
    assert torch.allclose(s, want, rtol=1e-6)
    same = SmoothedLinear(1 / s, torch.nn.Linear(24, 10))
    same.linear.weight.data, same.linear.bias.data = w * s, lin.bias.detach().clone()
    assert torch.allclose(same(x), lin(x), atol=1e-4, rtol=1e-5)


@needs_cxx
def test_compiled_minilm_matches_eager():
    """(The compiled decoding step is measured in benchmarks/generation.py; compiling it here would
    take minutes of the test budget.)"""
    from kexue.models.pretrained import minilm

    model, tok = minilm()
    batch = tok.encode_batch(["a compiled encoder", "gives the same vectors as the eager one"])
    args = (batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
    with torch.inference_mode():
        want = model(*args).hidden
        got = compile_model(model, dynamic=False)(*args).hidden
    assert (got - want).abs().max() <= 1e-4


def test_bad_requests_are_refused_by_name():
    model = small("bert")
    with pytest.raises(ValueError, match="'int4'"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="already quantized"):
        quantize(quantize(model, "int8"), "int8")
    with pytest.raises(ValueError, match="float32"):
        quantize(small("bert").double(), "int8")
    with pytest.raises(ValueError, match="eval"):
        quantize(small("bert").train(), "int8")
    with pytest.raises(ValueError, match="calibration"):
        quantize(model, "fp32-decode", calibration=lambda m: None)
    with pytest.raises(ValueError, match="no linear layer"):
        quantize(model, "int8", calibration=lambda m: None)
    with pytest.raises(ValueError, match="lacks"):
        compile_model(torch.nn.Linear(2, 2))


def test_bf16_is_picked_only_where_native(monkeypatch):
    base = hardware.cpu_features()
    if base.torch_capability in ("DEFAULT", "AVX2"):  # PyTorch itself found no AVX-512 here
        assert not base.avx512
    for native in (False, True):
        feats = hardware.CPUFeatures(base.name, base.torch_capability, True, native, native, native, False)
        monkeypatch.setattr(hardware, "cpu_features", lambda feats=feats: feats)
        assert hardware.native_bf16("cpu") is native
        assert hardware.inference_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
        assert ("native" if native else "emulated") in hardware.describe("cpu")
