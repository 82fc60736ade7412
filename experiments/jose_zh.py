"""JoSE on real Chinese text: spherical paragraph vectors vs a bag-of-words baseline on the Chinese
sentence-pair sets, plus nearest neighbours of chosen words.

Documents (unsupervised, no label is read for training): every sentence of sts-b-zh (all splits), of
the first ``--pairs`` pairs of each sim-zh set, and the fortunes-zh Tang/Song poems and the first
``--passages`` fortunes passages; jieba words. The evaluated sentences are documents of the training
corpus, as in Doc2Vec/JoSE (a paragraph vector exists only for a trained paragraph). Writes
experiments/results/jose_zh.{md,json}.

    PYTHONPATH=. python experiments/jose_zh.py --epochs 4
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections import Counter
from pathlib import Path

import torch
from scipy.stats import spearmanr

from kexue.data.shipped import data_root, fortunes, poems, sts_zh
from kexue.similarity.jose import Corpus, nearest_words, train_jose

OUT = Path(__file__).resolve().parent / "results"
SIM_SETS = ("ATEC", "BQ", "LCQMC", "PAWSX")
WORDS = ("男人", "足球", "飞机", "银行", "手机", "明月", "春风", "喜欢")


def sim_zh(name: str, limit: int) -> list[tuple[str, str, float]]:
    rows = []
    with open(data_root() / "sim-zh" / f"{name}.valid.data", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                rows.append((parts[0], parts[1], float(parts[2])))
    return rows[:limit]


def bow_cosine(a: list[str], b: list[str]) -> float:
    ca, cb = Counter(a), Counter(b)
    dot = sum(ca[w] * cb[w] for w in ca)
    return dot / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()) or 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=2000, help="pairs taken from each sim-zh set")
    ap.add_argument("--passages", type=int, default=1000, help="fortunes-zh 'chinese' passages")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import jieba

    jieba.setLogLevel(logging.WARNING)
    sets = {"sts-b-zh test": [(p.a, p.b, p.score) for p in sts_zh("test")]}
    sets.update({f"{n} (valid, first {args.pairs})": sim_zh(n, args.pairs) for n in SIM_SETS})
    texts = [s for split in ("train", "valid") for p in sts_zh(split) for s in (p.a, p.b)]
    first_eval_doc = len(texts)
    spans = {}
    for name, rows in sets.items():
        spans[name] = len(texts)
        texts += [s for a, b, _ in rows for s in (a, b)]
    texts += [p.text for p in poems("tang300") + poems("song100")] + fortunes("chinese")[:args.passages]
    docs = [[w for w in jieba.lcut(t) if w.strip()] for t in texts]
    corpus = Corpus(docs, min_count=2)
    n_tokens = sum(len(d) for d in corpus.docs)
    print(f"{len(docs)} documents, {len(corpus.words)} words (min count 2), {n_tokens} tokens")
    t0 = time.perf_counter()
    model, history = train_jose(corpus, dim=args.dim, epochs=args.epochs, window=args.window, lr=args.lr,
                                batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - t0
    doc = model.doc.detach()
    center = model.center.detach()

    def word_avg(i: int) -> torch.Tensor:
        ids = corpus.docs[i]
        v = center[ids].mean(0) if len(ids) else torch.zeros(center.shape[1])
        return v / v.norm().clamp(min=1e-12)

    rows = []
    for name, pairs in sets.items():
        start = spans[name]
        gold = [s for _, _, s in pairs]
        a_idx = [start + 2 * i for i in range(len(pairs))]
        bow = [bow_cosine(docs[i], docs[i + 1]) for i in a_idx]
        jose = [float(doc[i] @ doc[i + 1]) for i in a_idx]
        avg = [float(word_avg(i) @ word_avg(i + 1)) for i in a_idx]
        rows.append({"set": name, "pairs": len(pairs), "bow": spearmanr(bow, gold)[0],
                     "jose_doc": spearmanr(jose, gold)[0], "jose_word_avg": spearmanr(avg, gold)[0]})
    neighbours = {w: nearest_words(model, corpus, w, 6) for w in WORDS if w in corpus.index}
    lines = [f"JoSE (dim {args.dim}, window {args.window}, {args.epochs} epochs, lr {args.lr}, "
             f"{len(history['loss'])} steps, {seconds:.0f} s) on {len(docs)} documents / {n_tokens} tokens; "
             "Spearman of cosine vs gold", "",
             "| set | pairs | bag of words | JoSE paragraph vectors | JoSE mean word vector |", "|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['pairs']} | {r['bow']:.4f} | {r['jose_doc']:.4f} | {r['jose_word_avg']:.4f} |"
              for r in rows]
    lines += ["", "Nearest words (cosine of centre-word vectors):", ""]
    lines += [f"- {w}: " + ", ".join(f"{n} ({s:.2f})" for n, s in nb) for w, nb in neighbours.items()]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    from kexue.io import atomic_write, write_json

    atomic_write(args.out / "jose_zh.md", lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    write_json(args.out / "jose_zh.json", {"rows": rows, "neighbours": neighbours, "train_seconds": seconds,
                                           "loss_first": history["loss"][0], "loss_last": history["loss"][-1],
                                           "settings": {k: str(v) for k, v in vars(args).items()},
                                           "first_eval_doc": first_eval_doc})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
