"""SimBERT / RoFormer-Sim trained for a few CPU minutes on real Chinese paraphrases.

Data: sts-b-zh train pairs with score >= 4 (both directions, as SimBERT's neighbouring samples).
Model: a small RoFormer (character vocabulary from the sts-b-zh train sentences) from scratch —
no Chinese checkpoint ships offline. Reports: AUC of true pairs vs random pairs (train and the
held-out test pairs with score >= 4), Spearman on sts-b-zh test, and generated candidates with
the share that are not copies of the input.
Run: PYTHONPATH=. python experiments/simbert_zh.py [--seconds 180]
"""
from __future__ import annotations

import argparse
import json

import torch
from _similarity_setup import parse

from kexue import datasets
from kexue.similarity.evaluate import evaluate_pairs
from kexue.similarity.simbert import SimBERT, pair_auc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--family", default="roformer", choices=["roformer", "bert"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    args, out = parse(ap, "runs/simbert_zh")
    train_all, test_all = datasets.sts_zh("train"), datasets.sts_zh("test")
    train = [(p.a, p.b) for p in train_all if p.score >= 4]
    test = [(p.a, p.b) for p in test_all if p.score >= 4]
    sb = SimBERT.small([s for p in train_all for s in (p.a, p.b)], family=args.family, hidden=args.hidden,
                       layers=args.layers, heads=4, maxlen=48)
    n_params = sum(p.numel() for p in sb.model.parameters())
    print(f"{len(train)} train pairs (score >= 4), {len(test)} test pairs; {args.family} "
          f"{args.layers}x{args.hidden}, {n_params / 1e6:.1f}M params, vocab {sb.tokenizer.vocab_size}")
    auc0 = pair_auc(sb, test)
    hist = sb.fit(train, seconds=args.seconds, batch_size=32, lr=1e-3)
    last = {k: sum(h[k] for h in hist[-20:]) / len(hist[-20:]) for k in hist[0]}
    res = {"steps": len(hist), "first": hist[0], "last20": last,
           "auc_test_untrained": auc0, "auc_train": pair_auc(sb, train), "auc_test": pair_auc(sb, test),
           "spearman_zh_test": evaluate_pairs(sb.encode, test_all)}
    print(f"{len(hist)} steps; seq2seq {hist[0]['seq2seq']:.2f} -> {last['seq2seq']:.2f}, "
          f"contrastive {hist[0]['contrastive']:.2f} -> {last['contrastive']:.2f}")
    print(f"AUC true vs random pairs: train {res['auc_train']:.3f}, test {res['auc_test']:.3f} "
          f"(untrained {auc0:.3f}); Spearman sts-b-zh test {res['spearman_zh_test']:.4f}")
    samples, copies, total = [], 0, 0
    for a, _ in train[:3] + test[:3]:
        raw = sb.sample(a, n=8, topk=5, seed=0)
        copies += sum(c.replace(" ", "") == a.replace(" ", "") for c in raw)
        total += len(raw)
        ranked = sb.generate_similar(a, n=8, topk=5, seed=0, k=3)
        samples.append({"input": a, "top3": ranked})
        print(f"\n{a}\n" + "\n".join(f"  {s:.3f}  {c}" for c, s in ranked))
    res["copies"], res["candidates"], res["samples"] = copies, total, samples
    print(f"\n{total - copies}/{total} sampled candidates are not copies of the input")
    (out / "simbert_zh.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    print(f"wrote {out}/simbert_zh.json")


if __name__ == "__main__":
    main()
