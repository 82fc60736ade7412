"""Shared timing helpers for the side-by-side benchmarks (not a test; nothing is asserted)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def time_round_robin(fns: dict[str, Callable[[], object]], reps: int = 5, warmup: int = 1,
                     stat: Callable[[list[float]], float] = statistics.median) -> dict[str, float]:
    """Seconds per call of each function (``stat`` of ``reps`` samples: median, or ``min`` for best-of),
    interleaving them so load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()  # GPU kernels run asynchronously: time until they are done
            samples[name].append(time.perf_counter() - t0)
    return {k: stat(v) for k, v in samples.items()}


def sync() -> None:
    """Wait for queued GPU work (no-op on CPU-only runs)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def matmul_peak_gflops(n: int = 1024, reps: int = 5, dtype=torch.float32) -> float:
    """Measured fp32 GEMM throughput on this machine (the roofline the encoder is compared with)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / t / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def save_result(name: str, result: dict, device: torch.device | str = "cpu") -> Path:
    """Write one benchmark's numbers to ``benchmarks/results/<name>.json`` (``<name>_cuda.json`` for a GPU
    run, so CPU and GPU numbers live side by side; ``report.py`` merges them)."""
    from kexue.io import write_json

    kind = torch.device(device).type
    stem = name if kind == "cpu" else f"{name}_{kind}"
    return write_json(Path(__file__).resolve().parent / "results" / f"{stem}.json", result)
