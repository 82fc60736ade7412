"""The output checks of ``benchmarks/embed_users.py`` and ``benchmarks/ner_users.py`` (nothing is timed):
kexue's paths and the peers agree on real sentences, so their speed ratios compare equal answers.

- embed: a 1-layer cut of all-MiniLM-L6-v2 on STS-B en + Chinese sentences: sentence-transformers' encode,
  kexue torch fp32 and ONNX Runtime fp32 (``kexue export onnx``) give the same vectors to 1e-5;
- ner: a small BERT GlobalPointer tagger (``kexue ner --family bert``) on People's Daily sentences: bert4torch's
  BERT + GlobalPointer with the same weights gives the same span scores (1e-5 of their scale) and the same
  entities as kexue torch fp32 and ONNX Runtime fp32.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from kexue.tools.onnx_export import available

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def _bench(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXUE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_embed_users_sides_agree():
    result = _bench("embed_users").run(40, timing=False, layers=1, quick=True)
    rows = result["rows"]
    assert {"kexue torch fp32", "kexue onnxruntime fp32", "kexue default (auto fp32)", "sentence-transformers fp32"} <= set(rows)
    for name in ("kexue onnxruntime fp32", "kexue default (auto fp32)", "sentence-transformers fp32"):
        assert rows[name]["max_abs_diff"] <= 1e-5, (name, rows[name])
    assert rows["kexue default (auto fp32)"]["path"].endswith("fp32")
    assert result["sentences"] == 40 and result["tokens_max"] > 1.5 * result["tokens_mean"]  # mixed lengths


def test_ner_users_sides_agree():
    result = _bench("ner_users").run(24, 16, timing=False, from_scratch=True, quick=True)
    assert result["entities_fp32"] > 0
    assert result["score_max_abs_diff_vs_bert4torch"] <= 1e-5 * max(1.0, result["score_max_abs"]), result
    for name in ("kexue onnxruntime fp32", "kexue default (auto fp32)", "bert4torch fp32"):
        assert result["rows"][name]["identical_entities"] == 1.0, (name, result["rows"][name])
