"""The inference path a loaded model runs: backend (torch, ONNX Runtime) × precision (fp32, bf16, int8).

``kexue.load(DIR, backend="auto", precision="fp32")`` (and ``--backend`` / ``--precision`` on ``kexue
predict / embed / search``) calls :func:`choose`, which follows these rules:

1. **Precision is never lowered by default.** ``precision="fp32"`` (the default) runs fp32 only: torch, or
   ONNX Runtime's fp32 graph, whose outputs (hidden states, logits, span scores) must equal the torch model's on
   the batches the predictor builds from the calibration inputs to ``FP32_TOLERANCE · max(1, max|output|)``
   (:data:`~kexue.recipes.graphs.FP32_TOLERANCE`, 1e-5; the predictions' agreement is reported beside it).
2. ``precision="auto"`` adds bf16 where the CPU computes it natively (:func:`kexue.hardware.native_bf16`:
   avx512_bf16 / AMX) and int8 where it has int8 dot products (:func:`kexue.hardware.native_int8`: VNNI,
   AMX-int8), each admitted only when its agreement with fp32 on the calibration inputs is within
   :data:`~kexue.recipes.graphs.BUDGET`. Explicit ``"bf16"`` / ``"int8"`` run that precision (bf16 is refused where emulated);
   the agreement is measured and reported, not enforced.
3. ``backend="auto"`` considers ONNX Runtime for the tasks that have a graph (:mod:`kexue.recipes.graphs`:
   encoder, classify, ner) when an export of the same weights exists (``kexue export onnx DIR`` wrote
   ``DIR/onnx``, or an earlier ``backend="onnxruntime"`` load left one in the cache);
   ``backend="onnxruntime"`` exports into the cache when there is none. ``backend="torch"``: torch only.
4. One candidate: it runs, nothing is measured. Several: each runs :data:`~kexue.recipes.graphs.CALIBRATION_TEXTS`
   (48 inputs of mixed length) through ``predict`` (warm-up, then best of :data:`REPEATS` interleaved runs), and
   the fastest one within the rules wins. The choice and its measurements are cached per machine (CPU, threads, library versions)
   and model files in ``$KEXUE_CACHE`` (default ``~/.cache/kexue``) ``/paths/``, so it is made once.

The predictor reports its path: ``predictor.path`` (:class:`InferencePath`: backend, precision, why, and
every candidate's seconds and agreement).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from kexue.recipes.graphs import BUDGET, FP32_TOLERANCE, agreement, exact, within_budget

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
REPEATS = 2


@dataclass
class InferencePath:
    """What a predictor runs and why (``predictor.path``)."""

    backend: str
    precision: str
    reason: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # seconds and agreement with fp32 of each
    reference_seconds: float | None = None  # torch fp32 on the same calibration inputs

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    def __str__(self) -> str:
        timed = {k: v["seconds"] for k, v in self.candidates.items() if "seconds" in v}
        if len(timed) < 2 or not self.reference_seconds:
            return f"{self.name} ({self.reason})"
        ratios = ", ".join(f"{k} {self.reference_seconds / s:.2f}x" for k, s in sorted(timed.items(), key=lambda kv: kv[1]))
        return f"{self.name} ({self.reason}; speed vs torch fp32: {ratios})"


def cache_dir() -> Path:
    """``$KEXUE_CACHE``, else ``$XDG_CACHE_HOME/kexue``, else ``~/.cache/kexue``."""
    if os.environ.get("KEXUE_CACHE"):
        return Path(os.environ["KEXUE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kexue"


# --------------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------------
def check_request(task: str, backend: str, precision: str) -> None:
    """Refuse an unknown or impossible backend / precision by name."""
    from kexue.hardware import describe, native_bf16
    from kexue.recipes.graphs import GRAPHS, task_graph

    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if backend == "onnxruntime":
        task_graph(task)  # a task without a graph is refused with its reason
        from kexue.tools.onnx_export import available

        if available():
            raise ValueError(f"backend 'onnxruntime': {available()}")
        if precision == "bf16":
            raise ValueError("backend 'onnxruntime' has no bf16 path on CPU here; use backend torch for bf16")
    if precision == "bf16":
        if task not in GRAPHS:
            raise ValueError(f"precision 'bf16' serves {', '.join(sorted(GRAPHS))} models; {task} models decode "
                             "in fp32 or int8")
        if not native_bf16():
            raise ValueError(f"precision 'bf16': this CPU has no native bf16 ({describe()}), so it would be "
                             "emulated, slower than fp32; use fp32 or int8")


def candidates(task: str, backend: str, precision: str, exported: bool) -> list[tuple[str, str]]:
    """The (backend, precision) pairs the rules allow for this request (see the module docstring)."""
    from kexue.hardware import native_bf16, native_int8
    from kexue.recipes.graphs import GRAPHS

    graphable = task in GRAPHS
    if precision == "auto":
        precisions = ["fp32"] + (["bf16", "int8"] if graphable else [])
        precisions = [q for q in precisions if q == "fp32" or (q == "bf16" and native_bf16())
                      or (q == "int8" and native_int8())]
    else:
        precisions = [precision]
    if backend == "auto":
        backends = ["torch"] + (["onnxruntime"] if graphable and exported else [])
    else:
        backends = [backend]
    return [(b, q) for q in precisions for b in backends if not (b == "onnxruntime" and q == "bf16")]


def build(predictor, backend: str, precision: str, export_dir: Path | None):
    """A copy of the fp32 torch ``predictor`` that runs (backend, precision)."""
    if backend == "torch" and precision == "fp32":
        return predictor
    if backend == "onnxruntime":
        from kexue.recipes.graphs import FP32_FILE, INT8_FILE, task_graph
        from kexue.tools.onnx_export import OnnxGraph

        return task_graph(predictor.task).attach(predictor, OnnxGraph(export_dir / (INT8_FILE if precision == "int8"
                                                                                   else FP32_FILE)))
    q = copy.copy(predictor)
    if precision == "int8":
        from kexue.tools.quantize import quantize

        q.model = quantize(predictor.model, "int8")
        return q
    from kexue.tools.quantize import to_bf16

    module = predictor.model
    if hasattr(module, "apply_main_layers"):  # the predictor's model is the Transformer itself (encoder)
        q.model = to_bf16(module)
        return q
    clone = copy.copy(module)  # a task module: only its Transformer (attribute "encoder") runs in bf16
    clone._modules = dict(module._modules)
    clone._modules["encoder"] = to_bf16(module.encoder)
    q.model = clone
    return q


# --------------------------------------------------------------------------------------------------
# ONNX graphs of the folder
# --------------------------------------------------------------------------------------------------
def _folder_key(directory: Path) -> str:
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]


def find_export(predictor, directory: Path, create: bool = False) -> Path | None:
    """The folder holding an ONNX export of ``directory``'s current weights for this task: ``DIR/onnx``,
    else the cache; ``create``: export into the cache when neither holds one."""
    from kexue.recipes.graphs import FP32_FILE, MANIFEST, export_folder, same_source

    cached = cache_dir() / "onnx" / _folder_key(directory)
    for where in (directory / "onnx", cached):
        manifest = where / MANIFEST
        if manifest.is_file() and (where / FP32_FILE).is_file():
            info = json.loads(manifest.read_text(encoding="utf-8"))
            if info.get("task") == predictor.task and same_source(directory, info.get("source", {})):
                return where
    if not create:
        return None
    export_folder(predictor, directory, cached)
    return cached


# --------------------------------------------------------------------------------------------------
# Choosing
# --------------------------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    from kexue.hardware import cpu_features

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu": cpu_features().summary(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": ort}


def _files(directory: Path, export_dir: Path | None) -> dict[str, list[int]]:
    from kexue.recipes.graphs import source_files

    paths = source_files(directory) + (sorted(export_dir.glob("*.onnx")) if export_dir else [])
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p.is_file()}


def timed(runs: dict[str, Callable[[], Any]], repeats: int = REPEATS) -> tuple[dict[str, Any], dict[str, float]]:
    """First outputs and best seconds of each run: a warm-up call each, then ``repeats`` interleaved rounds.
    A run that raises is left out of the timing; its output is the exception."""
    outputs: dict[str, Any] = {}
    for name, run in runs.items():
        try:
            outputs[name] = run()
        except Exception as e:  # noqa: BLE001 - a path that fails here is reported, not chosen
            outputs[name] = e
    ok = {n: r for n, r in runs.items() if not isinstance(outputs[n], Exception)}
    best = {name: float("inf") for name in ok}
    for _ in range(repeats):
        for name, run in ok.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return outputs, best


def choose(predictor, directory: str | Path, backend: str = "auto", precision: str = "fp32", cache: bool = True):
    """The predictor running the path the rules pick (module docstring); ``predictor.path`` says which and why."""
    from kexue.io import write_json
    from kexue.recipes.graphs import CALIBRATION_TEXTS, task_graph

    directory = Path(directory)
    task = predictor.task
    check_request(task, backend, precision)
    graphable = _has_graph(task)
    if graphable:
        try:
            task_graph(task).check(predictor)  # e.g. an encoder pooled from every layer's states
        except ValueError:
            if backend == "onnxruntime":
                raise
            graphable = False
    export_dir = None
    if graphable and backend in ("auto", "onnxruntime"):
        from kexue.tools.onnx_export import available

        if available() is None:
            export_dir = find_export(predictor, directory, create=backend == "onnxruntime")
    pairs = candidates(task, backend, precision, export_dir is not None)
    names = [f"{b} {q}" for b, q in pairs]
    if len(pairs) == 1:
        chosen = build(predictor, *pairs[0], export_dir)
        why = "the only path the request allows" if (backend, precision) != ("auto", "fp32") else \
            "fp32 by default; no ONNX export of this folder" if graphable else "fp32 by default"
        chosen.path = InferencePath(*pairs[0], why)
        return chosen
    key = hashlib.sha256(json.dumps({"machine": _machine(), "files": _files(directory, export_dir), "task": task,
                                     "candidates": names, "request": [backend, precision],
                                     "rules": [FP32_TOLERANCE, BUDGET.get(task)]},
                                    sort_keys=True).encode()).hexdigest()[:24]
    record = cache_dir() / "paths" / f"{key}.json"
    if cache and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        chosen = build(predictor, saved["backend"], saved["precision"], export_dir)
        chosen.path = InferencePath(saved["backend"], saved["precision"], saved["reason"] + " (cached)",
                                    saved["candidates"], saved.get("reference_seconds"))
        return chosen
    spec = task_graph(task)
    items = spec.items(predictor, CALIBRATION_TEXTS)
    built, failed = {}, {}
    for name, (b, q) in zip(names, pairs):
        try:
            built[name] = build(predictor, b, q, export_dir)
        except Exception as e:  # noqa: BLE001 - e.g. an unreadable graph file: reported, not chosen
            failed[name] = e
    built.setdefault("torch fp32", predictor)  # the reference every path is measured against
    progress = predictor.progress
    for p in built.values():
        p.progress = False
    outputs, seconds = timed({name: (lambda p=p: p.predict(items)) for name, p in built.items()})
    outputs.update(failed)
    reference = outputs["torch fp32"]
    if isinstance(reference, Exception):
        raise reference
    measured: dict[str, dict[str, Any]] = {}
    batches = None
    for name in names:
        if isinstance(outputs[name], Exception):
            measured[name] = {"error": f"{type(outputs[name]).__name__}: {outputs[name]}"[:300], "admitted": False}
            continue
        agreed = agreement(task, reference, outputs[name])
        b, q = name.split()
        if (b, q) == ("onnxruntime", "fp32"):
            # fp32 is judged on the graph's outputs (a prediction may flip where a score sits at its threshold)
            from kexue.recipes.graphs import model_batches
            from kexue.tools.onnx_export import check_graph

            batches = batches or model_batches(spec, predictor, [items])
            check = check_graph(built[name].model.graph, spec.module(predictor), batches, spec.where)
            agreed.update(graph_max_abs_diff=check["max_abs_diff"],
                          graph_tolerance=FP32_TOLERANCE * max(1.0, check["max_abs_reference"]))
            ok = agreed["graph_max_abs_diff"] <= agreed["graph_tolerance"]
        elif q == "fp32":
            ok = exact(task, agreed)
        else:
            ok = precision != "auto" or within_budget(task, agreed)
        measured[name] = {"seconds": seconds[name], **agreed, "admitted": ok}
    admitted = [n for n in names if measured[n]["admitted"]]
    if not admitted:  # only an explicit lower precision can get here: every engine of it failed
        raise RuntimeError(f"no {precision} path runs this model: " +
                           "; ".join(f"{n}: {m.get('error', 'outside the tolerance')}" for n, m in measured.items()))
    best = min(admitted, key=lambda n: measured[n]["seconds"])
    b, q = best.split()
    reason = f"fastest of {len(names)} paths on {len(items)} calibration inputs, measured on this machine"
    refused = [n for n in names if not measured[n]["admitted"]]
    if refused:
        reason += f"; not admitted (outside the {'fp32 tolerance' if precision == 'fp32' else 'budget'}, or " \
                  "failed): " + ", ".join(refused)
    for p in built.values():
        p.progress = progress
    chosen = built[best]
    chosen.path = InferencePath(b, q, reason, measured, seconds.get("torch fp32"))
    if cache:
        write_json(record, asdict(chosen.path))
    return chosen


def _has_graph(task: str) -> bool:
    from kexue.recipes.graphs import GRAPHS

    return task in GRAPHS


def configure(predictor, directory: str | Path, backend: str = "auto", precision: str = "fp32",
              quantize: str | None = None):
    """What :func:`kexue.load` calls: ``quantize`` (the earlier option: a :func:`kexue.tools.quantize.quantize`
    mode on the torch model) as before, else :func:`choose`."""
    if quantize is None:
        return choose(predictor, directory, backend, precision)
    if backend not in ("auto", "torch") or precision != "fp32":
        raise ValueError(f"quantize={quantize!r} is the torch int8 path; give it alone, or use precision='int8'")
    from kexue.tools.quantize import quantize as quantize_model

    predictor.model = quantize_model(predictor.model, quantize)
    predictor.path = InferencePath("torch", quantize, f"requested (quantize={quantize!r})")
    return predictor


__all__ = ["BACKENDS", "InferencePath", "PRECISIONS", "REPEATS", "build", "cache_dir", "candidates", "check_request",
           "choose", "configure", "find_export", "timed"]
