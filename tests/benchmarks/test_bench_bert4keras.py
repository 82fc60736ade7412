"""The output check of ``benchmarks/bert4keras.py`` on a tiny model (nothing is timed): bert4keras writes
a TF checkpoint, ``kexue convert bert4keras`` reads it, and the benchmark's two sides agree: the
encoder's hidden states to 1e-5, the UniLM beam search (bert4keras's ``AutoRegressiveDecoder`` vs
kexue's cached ``generate(rule="bert4keras")``) token for token, and UniLM's probabilities on the
decoded sequence to 1e-5."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bert4keras.py"


def _bench():
    spec = importlib.util.spec_from_file_location("benchmark_bert4keras", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_sides_agree_on_tiny_model():
    bench = _bench()
    if not (bench.B4K_VENV / ".kexue-installed").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{bench.B4K_VENV} is missing: `make bert4keras-oracle` must run before the tests in CI")
        pytest.skip(f"bert4keras oracle not installed ({bench.B4K_VENV}); run `make bert4keras-oracle`")
    result = bench.run(2, timing=False, **bench.TINY)
    for key, row in result["encoder"].items():
        assert row["max_abs_diff"] <= 1e-5 * max(1.0, row["max_abs_hidden"]), (key, row)
    beam = result["unilm_beam"]
    assert len(beam["bert4keras_ids"]) == bench.TINY["new_tokens"]
    assert beam["ids_equal"], beam
    assert beam["max_abs_diff_probs"] <= 1e-5 and beam["max_abs_diff_log_probs"] <= 1e-5, beam
