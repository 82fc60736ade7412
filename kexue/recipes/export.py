"""``kexue export onnx DIR``: a saved model folder as ONNX graphs, fp32 and int8, checked against PyTorch.

Exports encoder folders and the ``classify`` / ``ner`` task models (Transformer + head, one graph); refuses
``generate``, ``reading``, ``poem``, ``dialogue`` by name (they decode token by token over a KV cache).
What each graph computes, the files and the checks: :mod:`kexue.recipes.graphs`. Written into ``DIR/onnx``
(or ``--out``); ``kexue.load(DIR)`` then runs ONNX Runtime where it is faster (:mod:`kexue.recipes.fastpath`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from kexue.recipes import args as at
from kexue.recipes.graphs import SAMPLE_TEXTS, export_folder, task_graph
from kexue.recipes.predictor import load


def read_check_input(path: str) -> list[Any]:
    lines = [ln.rstrip("\r\n") for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) < 2:
        raise at.UsageError(f"--check-input {path}: needs at least 2 non-empty lines")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue export", description="Export a saved model folder (encoder, classify, ner) "
                          "to ONNX, fp32 and int8, checked against the PyTorch model.")
    p.add_argument("format", choices=["onnx"], help="the export format")
    p.add_argument("model", type=at.model_dir, help="model folder written by a recipe (or an HF-layout encoder)")
    p.add_argument("--out", metavar="DIR", help="folder for the graphs (default: MODEL/onnx)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 graph")
    p.add_argument("--per-tensor", action="store_true",
                   help="int8 weights with one scale per matrix (default: one per output column, closer to fp32)")
    p.add_argument("--check-input", type=at.input_file, metavar="FILE",
                   help="check on these texts, one per line (a pair model: text_a<TAB>text_b)")
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch / ONNX Runtime threads")
    args = p.parse_args(argv)
    from kexue.tools.onnx_export import available

    if available():
        raise at.UsageError(available())
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load(args.model, backend="torch", precision="fp32")
    task_graph(predictor.task)  # refused before anything is written
    texts = read_check_input(args.check_input) if args.check_input else SAMPLE_TEXTS
    manifest = export_folder(predictor, args.model, args.out or Path(args.model) / "onnx", not args.no_int8,
                             texts, not args.per_tensor)
    summary = {"out": str(Path(args.out or Path(args.model) / "onnx")), "task": manifest["task"],
               "files": manifest["files"], "checks": manifest["checks"]}
    sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return 0


__all__ = ["main", "read_check_input"]
