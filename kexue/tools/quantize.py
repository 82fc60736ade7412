"""Inference-time model transforms: int8 quantization, a decoding weight layout, compilation.

    W ≈ diag(s) · W_q,   W_q = round(W / s) ∈ [-127, 127]^{out×in},   s_o = max_i |W_oi| / 127

one scale per output channel (row o of ``nn.Linear``'s weight). Every transform is a module swap:
each ``nn.Linear`` is replaced by a module holding the transformed weight, and the tied output head
(``F.linear(x, embedding.weight)`` in GPT and the BERT/UniLM MLM head) is reached through the
embedding table, whose lookups stay fp32 while a linear map against it runs the transformed kernel
(an untied BERT/UniLM MLM head's own matrix is wrapped the same way).
The model code is not touched, so ``generate`` and every predictor run a quantized model unchanged.

Modes of :func:`quantize`:

- ``"int8"``: dynamic quantization (PyTorch's ``torch.ao``, fbgemm): int8 weights per output channel,
  activations quantized to uint8 at every call from their own min/max. For encoder inference and for
  decoding on CPU; batch-1 decoding streams 4x fewer weight bytes. One range for a whole activation
  tensor (7 bits on CPUs without VNNI) is what costs accuracy: a few input channels carry outliers.
  With ``calibration`` (a function that runs the model on representative inputs) each linear is
  smoothed first (SmoothQuant, Xiao et al. 2022):  x W^T = (x / s)(W s)^T,  s_c = a_c^α / w_c^(1-α),
  a_c = max |x_c| seen in calibration, w_c = max_o |W_oc|, which moves the outliers into the weights
  (quantized per channel) and out of the activations.
- ``"int8-weight-only"``: int8 weights per output channel, activations stay fp32
  (``torch._weight_int8pack_mm``). Closer to fp32 than ``"int8"``; its CPU kernel is vectorised for
  AVX-512 only (see :mod:`kexue.hardware`): on an AVX2 CPU it is slower than fp32 and a warning says so.
- ``"fp32-decode"``: exact fp32 with every weight stored ``[in, out]``: the batch-1 matrix-vector
  product reads the weight row-contiguously, which MKL runs about 2x faster than ``[out, in]`` here.

A transformed model is for inference only (no gradients, not saved with ``save_pretrained``).

:func:`to_bf16` is the other lower precision: a bf16 copy of the whole model (weights and activations;
RoPE angles stay fp32) whose outputs come back in fp32, refused where bf16 would be emulated. On
all-MiniLM-L6-v2 its sentence vectors keep a cosine >= 0.9998 to fp32 and STS-B moves by 0.01 point
(experiments/int8_quality.py).
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("int8", "int8-weight-only", "fp32-decode")


# --------------------------------------------------------------------------------------------------
# Per-channel int8 weights
# --------------------------------------------------------------------------------------------------
def quantize_per_channel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``[out, in]`` float -> (int8 ``[out, in]``, fp32 scales ``[out]``), symmetric, one scale per row.
    An all-zero row gets scale 1 (its int8 row is zero), never a division by zero."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)
    scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8WeightOnlyLinear(nn.Module):
    """y = (x W_qᵀ) ⊙ s + b with int8 ``W_q`` and fp32 activations (``torch._weight_int8pack_mm``)."""

    def __init__(self, weight_int8: Tensor, scales: Tensor, bias: Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8.contiguous())
        self.register_buffer("scales", scales.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None = None) -> "Int8WeightOnlyLinear":
        q, s = quantize_per_channel(weight)
        return cls(q, s, bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float32:
            raise ValueError(f"Int8WeightOnlyLinear takes float32 activations, got {x.dtype}")
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).contiguous(), self.weight_int8, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class InOutLinear(nn.Module):
    """y = x Wᵀ + b with W stored transposed, ``[in, out]`` (exact fp32; a faster batch-1 GEMV layout)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight_t", weight.detach().t().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        y = x @ self.weight_t
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SmoothedLinear(nn.Module):
    """y = lin(x ⊙ s⁻¹) where ``lin`` holds W s (SmoothQuant's per-input-channel migration)."""

    def __init__(self, inv_scale: Tensor, linear: nn.Module):
        super().__init__()
        self.register_buffer("inv_scale", inv_scale)
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x * self.inv_scale)


def smoothing_scales(act_absmax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """s_c = a_c^α / w_c^(1-α) per input channel (both clamped away from zero)."""
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.detach().abs().amax(0).float().clamp(min=1e-5)
    return (a ** alpha / w ** (1 - alpha)).clamp(min=1e-5)


def _calibrate(model: nn.Module, calibration: Callable[[nn.Module], object]) -> dict[nn.Module, Tensor]:
    """max |x_c| of every nn.Linear's input over what ``calibration(model)`` runs."""
    amax: dict[nn.Module, Tensor] = {}

    def hook(module, inputs):
        a = inputs[0].detach().abs().flatten(0, -2).amax(0).float()
        amax[module] = torch.maximum(amax[module], a) if module in amax else a

    linears = [m for m in model.modules() if type(m) is nn.Linear]
    handles = [m.register_forward_pre_hook(hook) for m in linears]
    try:
        with torch.inference_mode():
            calibration(model)
    finally:
        for h in handles:
            h.remove()
    if not amax:
        raise ValueError("calibration ran no linear layer of the model: it must call the model it is given")
    return amax


def _dynamic_int8(weight: Tensor, bias: Tensor | None = None) -> nn.Module:
    """torch.ao's dynamically quantized linear (per-channel int8 weights) for a bare weight."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach(), requires_grad=False)
    lin.qconfig = per_channel_dynamic_qconfig
    return DynamicLinear.from_float(lin)


def _weight_only(weight: Tensor, bias: Tensor | None = None) -> nn.Module:
    return Int8WeightOnlyLinear.from_weight(weight, bias)


def _in_out(weight: Tensor, bias: Tensor | None = None) -> nn.Module:
    return InOutLinear(weight, bias)


_FACTORIES: dict[str, Callable[[Tensor, Tensor | None], nn.Module]] = {
    "int8": _dynamic_int8,
    "int8-weight-only": _weight_only,
    "fp32-decode": _in_out,
}


# --------------------------------------------------------------------------------------------------
# Tied output heads: the embedding table doubles as the LM / MLM output matrix
# --------------------------------------------------------------------------------------------------
class _TiedTable(torch.Tensor):
    """An embedding table whose lookups run on the fp32 data and whose ``F.linear(x, table, b)`` (the
    tied output head) runs a transformed linear, built on first use so tables never used as a head
    cost nothing. Only calls that involve this tensor pass through Python."""

    @staticmethod
    def __new__(cls, table: Tensor, factory: Callable[[Tensor, Tensor | None], nn.Module]):
        t = torch.Tensor._make_subclass(cls, table.detach(), False)
        t._factory, t._heads = factory, {}
        return t

    def __deepcopy__(self, memo):
        # a copy of the table; its transformed heads are rebuilt from it on first use
        if id(self) not in memo:
            with torch._C.DisableTorchFunctionSubclass():
                memo[id(self)] = _TiedTable(self.as_subclass(torch.Tensor).clone(), self._factory)
        return memo[id(self)]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2 and isinstance(args[1], cls):
            table = args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            key = None if bias is None else id(bias)
            head = table._heads.get(key)
            if head is None:  # one transformed head per bias tensor (the MLM head adds its own bias)
                with torch._C.DisableTorchFunctionSubclass():
                    head = table._heads[key] = table._factory(table.as_subclass(torch.Tensor), bias)
            return head(args[0])
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The public transforms
# --------------------------------------------------------------------------------------------------
def quantize(model: nn.Module, mode: str, inplace: bool = False,
             calibration: Callable[[nn.Module], object] | None = None, alpha: float = 0.7) -> nn.Module:
    """Return ``model`` (a copy unless ``inplace``) with every ``nn.Linear`` and tied output head
    transformed by ``mode``: ``"int8"``, ``"int8-weight-only"`` or ``"fp32-decode"`` (see the module
    docstring). The model must be in eval mode, fp32, on the CPU, and not already transformed.
    ``calibration`` (int8 only): a function called with the fp32 model that runs it on representative
    inputs, e.g. ``lambda m: embed(m, tokenizer, some_texts)``; the linears it reaches are smoothed
    with migration strength ``alpha`` before quantization (layers it does not reach are not)."""
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; known: {', '.join(MODES)}")
    if calibration is not None and mode != "int8":
        raise ValueError(f"calibration applies to mode='int8' only, not {mode!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if model.training:
        raise ValueError("quantize() is for inference: call model.eval() first")
    params = list(model.parameters())
    if any(isinstance(m, (Int8WeightOnlyLinear, InOutLinear, SmoothedLinear)) or type(m).__module__.startswith("torch.ao.nn")
           for m in model.modules()) or any(isinstance(p, _TiedTable) for p in params):
        raise ValueError("model is already quantized; quantize the original fp32 model instead")
    for p in params:
        if p.device.type != "cpu":
            raise ValueError(f"quantize() runs on CPU models; this model has parameters on {p.device}")
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ValueError(f"quantize() takes a float32 model; found a {p.dtype} parameter")
    if mode == "int8-weight-only":
        from kexue.hardware import cpu_features

        if not cpu_features().avx512:
            warnings.warn("int8-weight-only: torch._weight_int8pack_mm is vectorised for AVX-512 only and is "
                          "slower than fp32 on this CPU; mode='int8' is the fast int8 path here", stacklevel=2)
    if not inplace:
        model = copy.deepcopy(model)
    factory = _FACTORIES[mode]
    amax = _calibrate(model, calibration) if calibration is not None else {}
    with warnings.catch_warnings():  # torch.ao's notices about its own future move to torchao
        warnings.filterwarnings("ignore", message=r"(?s).*(deprecated|migrat)")
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and child in amax:
                    s = smoothing_scales(amax[child], child.weight, alpha)
                    setattr(parent, name, SmoothedLinear(1 / s, factory(child.weight * s, child.bias)))
                elif type(child) is nn.Linear:
                    setattr(parent, name, factory(child.weight, child.bias))
    from kexue.models.bert import MLMHead

    for module in model.modules():
        # The parameter dict is written directly: the table stays a parameter (model.parameters(),
        # devices) but is a _TiedTable, so a head that reads it as a matrix gets the transformed kernel.
        # The BERT family's untied MLM head holds its own matrix and reads it the same way.
        if type(module) is nn.Embedding or isinstance(module, MLMHead) and module.weight is not None:
            module._parameters["weight"] = _TiedTable(module.weight, factory)
    return model.requires_grad_(False)


class BFloat16Model(nn.Module):
    """A bf16 copy of a kexue model whose outputs come back in fp32: the matrix products run in bf16
    (native on CPUs with ``avx512_bf16`` / AMX, see :mod:`kexue.hardware`), while pooling, heads on top
    and decoding read fp32 tensors. Float inputs (a Conditional LayerNorm's ``cond``) are cast to bf16."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError("BFloat16Model is for inference: call model.eval() first")
        self.model = copy.deepcopy(model).to(torch.bfloat16).requires_grad_(False)
        self.config = getattr(model, "config", None)

    @staticmethod
    def _down(x):
        return x.to(torch.bfloat16) if isinstance(x, Tensor) and x.is_floating_point() else x

    def forward(self, *args, **kwargs):
        out = self.model(*[self._down(a) for a in args], **{k: self._down(v) for k, v in kwargs.items()})
        return _to_float(out)


def _to_float(out):
    """Every floating tensor of a model output (a tensor, a list/tuple, a dataclass such as
    ``TransformerOutput``) in fp32."""
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: _to_float(getattr(out, f.name)) for f in dataclasses.fields(out)})
    return out


def to_bf16(model: nn.Module) -> BFloat16Model:
    """``model`` with bf16 weights and fp32 outputs (:class:`BFloat16Model`); it refuses a CPU without
    native bf16 (emulated bf16 is several times slower than fp32, :func:`kexue.hardware.native_bf16`)."""
    from kexue.hardware import describe, native_bf16

    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if not native_bf16(device):
        raise ValueError(f"bf16 is emulated on this {device.type} ({describe(device)}): slower than fp32; "
                         "use precision fp32 or int8 here")
    return BFloat16Model(model)


def compile_model(model: nn.Module, dynamic: bool | None = None) -> nn.Module:
    """``torch.compile`` the layers of ``model`` in place and return it. A kexue ``Transformer``
    compiles its layer stack and heads (``apply_main_layers``, ``apply_final_layers``); its input
    checks stay eager (they read token ids, which would break the graph). A T5 compiles ``encode``
    and ``decode``. ``dynamic=None`` lets torch decide when shapes vary (lengths, cache sizes)."""
    names = ("apply_main_layers", "apply_final_layers") if hasattr(model, "apply_main_layers") else ("encode", "decode")
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise ValueError(f"compile_model supports kexue Transformers and T5; {type(model).__name__} lacks {missing}")
    for n in names:
        setattr(model, n, torch.compile(getattr(model, n), dynamic=dynamic))
    return model


__all__ = ["MODES", "BFloat16Model", "InOutLinear", "Int8WeightOnlyLinear", "SmoothedLinear", "compile_model", "quantize",
           "quantize_per_channel", "smoothing_scales", "to_bf16"]
