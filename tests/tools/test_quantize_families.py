"""kexue.tools.quantize on random weights of every family, against hand-computed int8 references.

Oracles (written out with plain torch ops here, not taken from kexue or torch.ao) and tolerances:
- ``"int8"``, per linear: :func:`dynamic_int8_reference`, fbgemm's dynamic quantized linear written out.
  Every quantized linear of every encoder family, fed the activations it really sees, equals it to
  1e-5 of its output's scale: the integer part is exact, only the float32 rescale rounds (measured
  ≤ 1.1e-7).
- ``"int8"``, end to end: a copy whose linears run that reference (fake quantization) carries exactly
  the error of the scheme, so the int8 model's drift from fp32 must be that error and nothing more:
  ``‖int8 − fake‖ ≤ 1 % ‖fake − fp32‖`` (only rounding decisions flipped by float32 noise may differ;
  measured ≤ 1e-4 of it). The drift itself (7-bit per-tensor activations) must be non-zero and under
  5 % relative (measured 0.07 % for the BERT family, 1 % for T5's encoder, 2 random layers).
- real text (STS-B-zh test pairs): the int8 model keeps the fp32 ranking of pair similarities
  (Spearman ≥ 0.98) and moves no similarity by more than 0.1 of their spread (measured ≤ 0.034).
- ``"int8-weight-only"``: y = x (W_q s)ᵀ + b with s = max|W_o| / 127, W_q = round(W / s): each linear
  to 1e-5 relative. A copy whose weights are replaced by W_q s (its head untied first, so token
  lookups keep the fp32 table) is an exact oracle of the whole decoding path, tied or untied head:
  logits to 1e-5 relative at every step (measured ≤ 2.7e-7, while fp32 itself is 0.6-0.9 % away),
  greedy and beam outputs identical.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from families_common import (DECODERS, ENCODER_FAMILIES, encoder_batch, encoder_hidden, padded_rows, prompts,  # noqa: F401
                             quiet_one_thread, sentences, tiny)  # quiet_one_thread: autouse fixture
from kexue.data.shipped import sts_zh
from kexue.generation import decoding_state, generate
from kexue.models.pretrained import mean_pool
from kexue.tools.quantize import Int8WeightOnlyLinear, quantize



# --------------------------------------------------------------------------------------------------
# Hand-computed references
# --------------------------------------------------------------------------------------------------
def dynamic_int8_reference(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """torch.ao / fbgemm dynamic int8 linear, written out:

        s_o = max_i |W_oi| / 127.5,  W_q = round(W / s) ∈ [-128, 127]       (per-channel symmetric observer)
        [lo, hi] = [min(x, 0), max(x, 0)] of the whole call,  s_x = (hi - lo) / 127  (uint8, reduce_range: 7 bits)
        z = -lo / s_x or 127 - hi / s_x (whichever end is represented better), rounded into [0, 127]
        x_q = clamp(round(x / s_x) + z, 0, 127)
        y = s_x s_o Σ_i (x_q - z)_i W_q,oi + b

    float64 accumulation stands in for fbgemm's exact int32 one."""
    w, x = weight.detach().float(), x.detach()
    s_w = (w.abs().amax(1) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
    w_q = torch.round(w * (1 / s_w)[:, None]).clamp(-128, 127)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s_x = torch.tensor((hi - lo) / 127, dtype=torch.float32)
    # the zero point comes from whichever end of the range represents itself with less error
    z_lo, z_hi = -lo / float(s_x), 127 - hi / float(s_x)
    z = z_lo if -abs(lo / float(s_x)) < 127 - abs(hi / float(s_x)) else z_hi
    z = 0 if z < 0 else 127 if z > 127 else round(z)
    x_q = (torch.round(x.float() * (1 / s_x)) + z).clamp(0, 127)
    y = ((x_q.double() - z) @ w_q.double().t()) * float(s_x) * s_w.double()
    return (y if bias is None else y + bias.detach().double()).float()


def weight_only_reference(weight: Tensor) -> Tensor:
    """W_q s with s_o = max_i |W_oi| / 127 (1 for an all-zero row), W_q = round(W / s) ∈ [-127, 127], in
    float32 like the kernel's own scales (float64 would round a few exact halves of a big table the
    other way)."""
    w = weight.detach().float()
    amax = w.abs().amax(1, keepdim=True)
    s = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.round(w / s).clamp(-127, 127) * s


class ReferenceLinear(nn.Module):
    """An ``nn.Linear`` replaced by :func:`dynamic_int8_reference` on its own fp32 weight."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: Tensor) -> Tensor:
        return dynamic_int8_reference(x, self.weight, self.bias)


def fake_quantized(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every ``nn.Linear`` runs the hand-written int8 reference."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, ReferenceLinear(child))
    return model


def dequantized(model: nn.Module) -> nn.Module:
    """A plain fp32 copy of ``model`` computing what int8-weight-only computes: every linear weight and
    output head replaced by W_q s. A tied head is untied first, so token lookups keep the fp32 table."""
    model = copy.deepcopy(model)
    if model.head_tied():
        model.untie_head()
    with torch.no_grad():
        for m in model.modules():
            if type(m) is nn.Linear:
                m.weight.copy_(weight_only_reference(m.weight))
        mlm = getattr(model, "mlm", None)
        if mlm is not None and mlm.weight is not None:  # the BERT family's head holds its own matrix
            mlm.weight.copy_(weight_only_reference(mlm.weight))
    return model


def linear_calls(quantized: nn.Module, run) -> list[tuple[str, Tensor, Tensor]]:
    """(module name, input, output) of every transformed linear that ``run(quantized)`` calls."""
    calls, handles = [], []
    for name, m in quantized.named_modules():
        if isinstance(m, Int8WeightOnlyLinear) or type(m).__module__.startswith("torch.ao.nn"):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: calls.append((name, inp[0].detach().clone(), out.detach().clone()))))
    try:
        run(quantized)
    finally:
        for h in handles:
            h.remove()
    return calls


def relative(got: Tensor, want: Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


# --------------------------------------------------------------------------------------------------
# int8 (dynamic): encoder families
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_int8_linears_equal_the_hand_reference(family):
    model = tiny(family)
    batch = encoder_batch(sentences(8))
    used, handles = [], [m.register_forward_hook(lambda mod, i, o, n=n: used.append(n))
                         for n, m in model.named_modules() if type(m) is nn.Linear]
    encoder_hidden(model, batch)
    for h in handles:
        h.remove()
    q = quantize(model, "int8")
    fp32 = dict(model.named_modules())
    calls = linear_calls(q, lambda m: encoder_hidden(m, batch))
    encoder = [n for n, m in model.named_modules() if type(m) is nn.Linear and not n.startswith(("decoder", "lm_head"))]
    assert sorted(set(used)) == sorted(encoder)  # each linear runs
    # ... as often as in fp32: once, or once per layer for a block shared across depth (ALBERT)
    assert sorted(name for name, _, _ in calls) == sorted(used)
    for name, x, y in calls:
        ref = dynamic_int8_reference(x, fp32[name].weight, fp32[name].bias)
        err = float((y - ref).abs().max() / ref.abs().max())
        assert err <= 1e-5, (name, err)


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_int8_drift_is_the_schemes_own(family):
    model = tiny(family)
    batch = encoder_batch(sentences(8))
    mask = batch["attention_mask"]
    want = padded_rows(encoder_hidden(model, batch), mask)
    got = padded_rows(encoder_hidden(quantize(model, "int8"), batch), mask)
    fake = padded_rows(encoder_hidden(fake_quantized(model), batch), mask)
    drift, scheme, gap = relative(got, want), relative(fake, want), float((got - fake).norm() / want.norm())
    assert gap <= 0.01 * scheme, (family, drift, scheme, gap)
    assert 0 < drift <= 0.05, (family, drift)


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_int8_keeps_the_similarity_ranking_on_real_text(family):
    model = tiny(family)
    pairs = sts_zh("test")[:48]
    batch = encoder_batch([p.a for p in pairs] + [p.b for p in pairs])

    def vectors(m):
        return F.normalize(mean_pool(encoder_hidden(m, batch), batch["attention_mask"]), dim=-1)

    ref, got = vectors(model), vectors(quantize(model, "int8"))
    n = len(pairs)
    sims_ref, sims_got = (ref[:n] * ref[n:]).sum(-1), (got[:n] * got[n:]).sum(-1)
    rho = spearmanr(sims_ref.numpy(), sims_got.numpy()).statistic
    # random weights make all sentence vectors alike: closeness is measured against the spread of the
    # fp32 similarities themselves, not against 1
    moved = float((sims_got - sims_ref).abs().max() / sims_ref.std())
    assert moved <= 0.1, (family, moved)
    assert rho >= 0.98, (family, rho)


# --------------------------------------------------------------------------------------------------
# int8-weight-only: decoding families
# --------------------------------------------------------------------------------------------------
def decode_run(model, ids: Tensor) -> Tensor:
    """Logits ``[4, B, V]`` of the prefill and three greedy steps through the decoding protocol."""
    with torch.inference_mode():
        state = decoding_state(model, ids)
        logits = [state.prefill()]
        for _ in range(3):
            logits.append(state.step(logits[-1].argmax(-1)))
    return torch.stack(logits)


@pytest.mark.parametrize("family, application", DECODERS)
def test_weight_only_linears_equal_the_dequantized_matmul(family, application):
    model = tiny(family, application)
    ids = prompts(3, 8)
    q = quantize(model, "int8-weight-only")
    fp32 = dict(model.named_modules())
    calls = linear_calls(q, lambda m: decode_run(m, ids))
    assert {name for name, _, _ in calls} == {n for n, m in model.named_modules() if type(m) is nn.Linear}
    for name, x, y in calls:
        lin = fp32[name]
        ref = x.double() @ weight_only_reference(lin.weight).double().t()
        ref = ref if lin.bias is None else ref + lin.bias.detach().double()
        assert relative(y, ref) <= 1e-5, (name, relative(y, ref))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family, application", DECODERS)
def test_weight_only_decoding_equals_the_dequantized_model(family, application, tied):
    """The output head is quantized too, whether it is the embedding table or its own matrix."""
    model = tiny(family, application)
    if not tied:
        model.untie_head()
    ids = prompts(4, 8)
    q, oracle = quantize(model, "int8-weight-only"), dequantized(model)
    got, want, fp32 = decode_run(q, ids), decode_run(oracle, ids), decode_run(model, ids)
    assert relative(got, want) <= 1e-5, relative(got, want)
    assert relative(got, fp32) > 10 * relative(got, want)  # the oracle is not just fp32 again
    assert generate(q, ids, max_new_tokens=8) == generate(oracle, ids, max_new_tokens=8)
    assert generate(q, ids, max_new_tokens=6, num_beams=3) == generate(oracle, ids, max_new_tokens=6, num_beams=3)


@pytest.mark.parametrize("mode", ["int8", "int8-weight-only", "fp32-decode"])
@pytest.mark.parametrize("family, application", DECODERS)
def test_a_transformed_model_is_not_saved(family, application, mode, tmp_path):
    """Its weights have no HF layout: save_pretrained refuses it by name and writes nothing."""
    from kexue.models.checkpoints import save_pretrained

    with pytest.raises(ValueError, match="kexue.tools.quantize.*fp32 model"):
        save_pretrained(quantize(tiny(family, application, layers=1), mode), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("family, application", DECODERS)
def test_a_transformed_model_deep_copies(family, application):
    """copy.deepcopy of a quantized model (its embedding tables are tensor subclasses) gives an
    independent model that decodes the same."""
    ids = prompts(2, 8)
    for mode in ("int8", "int8-weight-only"):
        q = quantize(tiny(family, application, layers=1), mode)
        c = copy.deepcopy(q)
        assert generate(c, ids, max_new_tokens=4) == generate(q, ids, max_new_tokens=4)
        assert torch.equal(decode_run(c, ids), decode_run(q, ids))
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(q.parameters(), c.parameters()))
