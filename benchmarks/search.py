"""Vector search speed: kexue exact search (torch) vs faiss IndexFlatIP vs sentence_transformers.util.semantic_search.

Same normalised vectors, same top-k, one process, round-robin timing; results are checked to agree.
Run: PYTHONPATH=. python benchmarks/search.py [--corpus 50000 --queries 1000 --dim 384]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

from kexue.similarity.search import FaissIndex, TorchIndex, faiss_available  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    corpus = F.normalize(torch.randn(args.corpus, args.dim), dim=-1)
    queries = F.normalize(torch.randn(args.queries, args.dim), dim=-1)

    ours = TorchIndex(args.dim, normalize=False)
    ours.add(corpus)
    fns = {"kexue TorchIndex": lambda: ours.search(queries, args.k)}
    from sentence_transformers import util

    fns["sentence_transformers semantic_search"] = lambda: util.semantic_search(queries, corpus, top_k=args.k)
    if faiss_available():
        fx = FaissIndex(args.dim, normalize=False)
        fx.add(corpus)
        fns["faiss IndexFlatIP (via kexue FaissIndex)"] = lambda: fx.search(queries, args.k)
    else:
        print("faiss not installed (pip install 'kexue[faiss]'); skipping it")

    # Agreement: same top-k sets (ties aside) across backends.
    ref = ours.search(queries, args.k)[1]
    st = util.semantic_search(queries, corpus, top_k=args.k)
    st_idx = torch.tensor([[h["corpus_id"] for h in row] for row in st])
    agree = {"sentence_transformers": (st_idx == ref).float().mean().item()}
    if faiss_available():
        agree["faiss"] = (fx.search(queries, args.k)[1] == ref).float().mean().item()
    times = time_round_robin(fns, reps=5)
    base = times["kexue TorchIndex"]
    print(f"exact top-{args.k}: {args.queries} queries x {args.corpus} vectors, dim {args.dim}, "
          f"{args.threads} threads (median of 5)")
    print("| method | seconds | queries/s | time ratio vs kexue |\n|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.4f} | {args.queries / t:,.0f} | {t / base:.2f} |")
    print("index agreement with kexue: " + ", ".join(f"{k} {v:.4f}" for k, v in agree.items()))


if __name__ == "__main__":
    main()
