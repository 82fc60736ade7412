"""Optimizer step time: kexue Lion vs lion-pytorch (and kexue Amos / torch AdamW for scale), side by side.

    python benchmarks/optimizers.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

from kexue.optim import Amos, Lion  # noqa: E402


def make_params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return ps


def main() -> None:
    torch.set_num_threads(1)
    from lion_pytorch import Lion as RefLion
    # a BERT-small-like parameter set: 4 layers of hidden 256 (~3.2M params in 26 tensors)
    shapes = [(256, 256)] * 16 + [(1024, 256), (256, 1024)] * 4 + [(256,)] * 2
    n = sum(torch.Size(s).numel() for s in shapes)
    opts = {
        "kexue.Lion": Lion(make_params(shapes), lr=1e-4, weight_decay=0.1),
        "lion_pytorch.Lion": RefLion(make_params(shapes), lr=1e-4, weight_decay=0.1),
        "torch.AdamW": torch.optim.AdamW(make_params(shapes), lr=1e-3, weight_decay=0.01),
        "kexue.Amos": Amos(make_params(shapes), lr=0.01),
        "kexue.Amos(reduced)": Amos(make_params(shapes), lr=0.01, reduce_dims=(-1,)),
    }
    times = time_round_robin({k: o.step for k, o in opts.items()}, reps=15, warmup=2)
    base = times["lion_pytorch.Lion"]
    print(f"optimizer step on {n / 1e6:.2f}M params, 1 thread (median of 15)")
    print(f"{'optimizer':<22}{'ms/step':>10}{'vs lion-pytorch':>18}{'state floats/param':>20}")
    for k, t in times.items():
        o = opts[k]
        state = sum(v.numel() for s in o.state.values() for v in s.values() if isinstance(v, torch.Tensor))
        print(f"{k:<22}{t * 1e3:>10.2f}{t / base:>17.2f}x{state / n:>20.2f}")


if __name__ == "__main__":
    main()
