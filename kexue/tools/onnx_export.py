"""ONNX export of kexue models, ONNX Runtime's int8 of the graph, and a backend that runs it.

A graph is ``module(*tensors) -> tensor`` exported once by ``torch.export`` (``torch.onnx.export(...,
dynamo=True)``), with the batch and length axes of every input dynamic, so one file serves every padded
batch. Value checks that read tensor data (ids in range, positions within the table) are skipped while
exporting (:func:`kexue.models.base.tracing`); the graph is pure arithmetic.

int8 is ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``): every
MatMul weight W becomes int8 with one scale per output column (``per_channel=False``: one per matrix),

    W_{:,o} ≈ s_o · W_q{:,o},  W_q = round(W / s) ∈ [-127, 127],   s_o = max_i |W_io| / 127

and each activation x is quantized to uint8 at every call from its own range,
x ≈ s_x (x_q − z_x), x_q ∈ [0, 255]; the products run as int8 × uint8 → int32 (``MatMulInteger``,
VNNI where the CPU has it). It is the same scheme as :func:`kexue.tools.quantize.quantize` ``"int8"``
(torch.ao / fbgemm), in ONNX Runtime's kernels.

:class:`OnnxGraph` runs an exported file in ONNX Runtime with torch tensors in and out;
:class:`OnnxEncoder` puts it where a kexue ``Transformer`` encoder was (``model(ids, segs, mask).hidden``),
so :func:`kexue.models.pretrained.embed` and every predictor run it unchanged.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from kexue.models.base import TransformerOutput

OPSET = 18
# A graph above this size is written with its weights in a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_800_000_000


def available() -> str | None:
    """``None`` when ONNX export and ONNX Runtime can run here, else why not (one line)."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not _importable(m)]
    return f"ONNX needs the packages {', '.join(missing)} (pip install {' '.join(missing)})" if missing else None


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@contextlib.contextmanager
def _quiet():
    """The exporter's and the quantizer's progress prints, warnings and log lines (a missing torchvision,
    advice to pre-process) are not the caller's business: silenced while they run."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _require() -> None:
    reason = available()
    if reason:
        raise RuntimeError(reason)


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
class EncoderGraph(nn.Module):
    """``(input_ids, segment_ids, attention_mask) -> hidden [B, L, H]``: a kexue Transformer encoder as a
    graph of three tensors (the form the ONNX file and ONNX Runtime take)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "apply_main_layers"):
            raise ValueError(f"EncoderGraph takes a kexue Transformer encoder, got {type(model).__name__}")
        if getattr(model, "cond_dim", None) is not None:
            raise ValueError("a Conditional LayerNorm model needs its condition as an input; it is not exported")
        self.model = model
        self.train(model.training)

    def forward(self, input_ids: Tensor, segment_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids, segment_ids, attention_mask).hidden


def export_graph(module: nn.Module, inputs: Mapping[str, Tensor], path: str | Path,
                 output_names: Sequence[str] = ("output",), max_length: int | None = None) -> Path:
    """Export ``module(*inputs.values())`` to the ONNX file ``path`` (opset :data:`OPSET`), every input's
    axes 0 (batch) and 1 (length) dynamic and shared across inputs. ``inputs`` are an example batch:
    at least 2 rows and 2 columns (torch.export would fix an axis of size 1 to 1). ``max_length``:
    the longest length the graph accepts (the model's positions)."""
    _require()
    path = Path(path)
    if not inputs:
        raise ValueError("export_graph needs at least one named input")
    shapes = {tuple(t.shape[:2]) for t in inputs.values()}
    if len(shapes) != 1 or min(next(iter(shapes))) < 2:
        raise ValueError(f"the example inputs must share one [batch, length] of at least [2, 2], got {sorted(shapes)}")
    if module.training:
        raise ValueError("export_graph exports inference graphs: call module.eval() first")
    for p in module.parameters():
        if p.device.type != "cpu" or p.dtype != torch.float32:
            raise ValueError(f"export_graph takes a float32 CPU module; found a {p.dtype} parameter on {p.device}")
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    length = torch.export.Dim("length", min=1, max=max_length or 1 << 16)
    dynamic = {name: {0: batch, 1: length} for name in inputs}
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, tuple(inputs.values()), dynamo=True, input_names=list(inputs),
                                     output_names=list(output_names), dynamic_shapes=dynamic, opset_version=OPSET,
                                     optimize=True, verbose=False)
        program.save(str(path), external_data=size > EXTERNAL_DATA_BYTES)
    return path


def quantize_graph(src: str | Path, dst: str | Path, per_channel: bool = True) -> Path:
    """ONNX Runtime's dynamic int8 quantization of the graph ``src`` into ``dst`` (see the module
    docstring): int8 weights (per output column unless ``per_channel=False``), activations quantized at
    run time. Per channel stays closer to fp32: on all-MiniLM-L6-v2 its sentence vectors keep a cosine
    >= 0.96 to fp32 over STS-B, per tensor >= 0.82 (experiments/int8_quality.py)."""
    _require()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # the exporter records intermediate shapes of the example batch; the quantizer re-infers them and
    # refuses any that disagree, so it gets the graph without them
    graph = onnx.load(str(src))
    del graph.graph.value_info[:]
    bare = dst.with_name(f".{dst.stem}.fp32.onnx")
    large = graph.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(graph, str(bare), save_as_external_data=large)
    try:
        with _quiet():
            quantize_dynamic(str(bare), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                             use_external_data_format=large)
    finally:
        bare.unlink(missing_ok=True)
        if large:
            for extra in bare.parent.glob(f"{bare.name}*.data"):
                extra.unlink()
    return dst


# --------------------------------------------------------------------------------------------------
# Running a graph
# --------------------------------------------------------------------------------------------------
class OnnxGraph:
    """An exported graph in an ONNX Runtime session (CPU): ``graph(input_ids=..., ...) -> Tensor`` (or a
    tuple for several outputs). Inputs are torch tensors, fed by name; a name the graph does not take is
    dropped (torch.export removes inputs the computation never reads), a missing one is an error.
    ``threads``: ONNX Runtime's intra-op threads (default: torch's, so both engines use the same cores)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        _require()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX graph there (kexue export onnx DIR writes one)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        self.outputs = tuple(o.name for o in self.session.get_outputs())

    def __call__(self, **tensors: Tensor) -> Tensor | tuple[Tensor, ...]:
        missing = [n for n in self.inputs if n not in tensors]
        if missing:
            raise ValueError(f"{self.path.name} needs the inputs {', '.join(missing)}")
        feeds = {n: tensors[n].detach().cpu().contiguous().numpy() for n in self.inputs}
        outs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        return f"OnnxGraph({self.path}, inputs={list(self.inputs)}, outputs={list(self.outputs)})"


class OnnxEncoder(nn.Module):
    """A kexue encoder whose forward runs an exported :class:`EncoderGraph` in ONNX Runtime:
    ``encoder(input_ids, segment_ids, attention_mask).hidden`` as the Transformer gives it. Options that
    the graph does not compute (every layer's states, a KV cache, a condition) are refused by name."""

    def __init__(self, graph: OnnxGraph, config):
        super().__init__()
        self.graph, self.config = graph, config
        # no weights live in torch; this empty buffer tells callers the device the outputs come back on
        self.register_buffer("device_marker", torch.empty(0), persistent=False)

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                **options) -> TransformerOutput:
        used = sorted(k for k, v in options.items() if v not in (None, False))
        if used:
            raise ValueError(f"the ONNX Runtime encoder computes the last hidden states only; "
                             f"{', '.join(used)} need the torch backend")
        segment_ids = torch.zeros_like(input_ids) if segment_ids is None else segment_ids
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return TransformerOutput(hidden=self.graph(input_ids=input_ids, segment_ids=segment_ids,
                                                   attention_mask=attention_mask))


# --------------------------------------------------------------------------------------------------
# Checking a graph against the PyTorch module
# --------------------------------------------------------------------------------------------------
def max_abs_diff(output: Tensor, reference: Tensor, where: Tensor | None = None) -> float:
    """max |output − reference| (over the positions ``where`` is True, broadcast over trailing axes)."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} != reference shape {tuple(reference.shape)}")
    d = (output.float() - reference.float()).abs()
    if where is not None:
        where = where.bool()
        while where.dim() < d.dim():
            where = where.unsqueeze(-1)
        d = d.masked_select(where.expand_as(d))
    return float(d.max()) if d.numel() else 0.0


def check_graph(graph: OnnxGraph, module: nn.Module, batches: Sequence[Mapping[str, Tensor]],
                where: Callable[[Mapping[str, Tensor]], Tensor] | None = None) -> dict[str, float]:
    """Run ``graph`` and the torch ``module`` on every batch (named inputs, in the module's argument
    order); ``{"max_abs_diff", "max_abs_reference"}`` over all batches. ``where(batch)``: a bool mask
    (broadcast over the output's trailing axes) of the positions to compare, e.g. the real tokens.
    Scores at or below −1e9 (masked spans) are compared but do not count towards the scale."""
    worst, scale = 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            ref = module(*batch.values())
            out = graph(**batch)
            worst = max(worst, max_abs_diff(out, ref, where(batch) if where else None))
            finite = ref[ref.abs() < 1e9]
            scale = max(scale, float(finite.abs().max()) if finite.numel() else 0.0)
    return {"max_abs_diff": worst, "max_abs_reference": scale}


__all__ = ["EXTERNAL_DATA_BYTES", "EncoderGraph", "OPSET", "OnnxEncoder", "OnnxGraph", "available", "check_graph",
           "export_graph", "max_abs_diff", "quantize_graph"]
