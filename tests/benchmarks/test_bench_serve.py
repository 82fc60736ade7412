"""The output check of ``benchmarks/serve_load.py`` (nothing is timed): ``kexue serve`` on the real
all-MiniLM-L6-v2 folder and the peer it is measured against (sentence-transformers behind the minimal
FastAPI app of ``benchmarks/_st_server.py``) answer the same inputs with the same vectors, so the
benchmark's throughput and latency ratios compare equal answers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from kexue.data.shipped import sts_en
from kexue.models.pretrained import minilm_path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_kexue_serve_and_the_sentence_transformers_peer_agree():
    spec = importlib.util.spec_from_file_location("benchmark_serve_load", BENCH / "serve_load.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    texts = [s for p in sts_en("test")[:12] for s in (p.a, p.b)]
    with bench.Server(minilm_path(), 1) as server:
        ours = np.array(bench.vectors(server.url, texts))
    with bench.Server(minilm_path(), 1, peer=True) as server:
        theirs = np.array(bench.vectors(server.url, texts))
    assert ours.shape == theirs.shape == (24, 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # both normalise as the folder's modules.json says (all-MiniLM-L6-v2 ends in a Normalize module)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
