"""``kexue demo``: semantic search with the real all-MiniLM-L6-v2, loaded through kexue.

Embeds the unique sentences of the English STS benchmark (test split) with a progress bar, then
answers a few queries with their nearest sentences by cosine similarity.
"""
from __future__ import annotations

import argparse
import time

import torch

from . import datasets
from .pretrained import embed, minilm

QUERIES = ["A man is playing a guitar.", "Dogs are running in the snow.", "The stock market fell sharply today."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kexue demo", description=__doc__)
    ap.add_argument("--query", action="append", help="query sentence (repeatable)")
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    pairs = datasets.sts_en("test")
    corpus = sorted({s for p in pairs for s in (p.a, p.b)})
    model, tok = minilm()
    t0 = time.perf_counter()
    vectors = embed(model, tok, corpus, progress=True)
    took = time.perf_counter() - t0
    print(f"embedded {len(corpus)} STS-B test sentences in {took:.1f}s ({len(corpus) / took:.0f} sentences/s)")
    queries = args.query or QUERIES
    scores = embed(model, tok, queries) @ vectors.T
    for q, row in zip(queries, scores):
        print(f"\nquery: {q}")
        top = row.topk(args.top)
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {s:.3f}  {corpus[i]}")
    return 0
