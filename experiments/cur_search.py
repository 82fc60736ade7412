"""CUR search for a cross-encoder on real sentences (《利用CUR分解加速交互式相似度模型的检索》).

Items: the second sentences of STS-B en test pairs; queries: their first sentences; anchor
queries (offline rows R): first sentences of train pairs. The cross-encoder is a 3-layer cut of
all-MiniLM-L6-v2 (weights loaded through kexue) fine-tuned for a CPU budget with the CoSENT
cross-encoder loss on the train pairs. Ground truth = exact cross-encoder top-10 over all items.
Curve: recall@10 vs cross-encoder calls per query for
  * CUR (k_i random anchor items + re-rank of the best reconstructed items),
  * bi-encoder (all-MiniLM-L6-v2 cosine) top-B re-ranked by the cross-encoder (B calls),
  * bi-encoder alone (0 calls).
Run: PYTHONPATH=. python experiments/cur_search.py [--items 200 --queries 40 --anchor-queries 40]
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch
from _similarity_setup import parse

from kexue.data import shipped as datasets
from kexue.models.pretrained import embed, minilm
from kexue.similarity.cur import CUR, cur_search, random_anchors, recall_at_k, rerank_search
from kexue.similarity.evaluate import spearman
from kexue.similarity.finetune import CrossEncoder, finetune_cross_encoder


def score_matrix(ce: CrossEncoder, queries: list[str], items: list[str], desc: str) -> torch.Tensor:
    t0 = time.perf_counter()
    s = ce.score([(q, it) for q in queries for it in items], batch_size=128).reshape(len(queries), len(items))
    dt = time.perf_counter() - t0
    print(f"{desc}: {s.numel()} cross-encoder calls in {dt:.0f}s ({s.numel() / dt:.0f} pairs/s)")
    return s.double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--anchor-queries", type=int, default=40)
    ap.add_argument("--layers", type=int, default=3, help="MiniLM layers kept in the cross-encoder")
    ap.add_argument("--train-seconds", type=float, default=120.0)
    args, out = parse(ap, "runs/cur_search")

    test, train = datasets.sts_en("test"), datasets.sts_en("train")
    rng = random.Random(0)
    pairs = list({p.b: p for p in test}.values())  # unique items
    rng.shuffle(pairs)
    pairs = pairs[:args.items]
    items = [p.b for p in pairs]
    queries = list(dict.fromkeys(p.a for p in pairs if p.a not in items))[:args.queries]
    anchor_q = list(dict.fromkeys(p.a for p in train))
    rng.shuffle(anchor_q)
    anchor_q = anchor_q[:args.anchor_queries]

    enc, tok = minilm()
    bi_model, _ = minilm()
    enc.layers = enc.layers[:args.layers]  # a smaller, faster cross-encoder
    ce = CrossEncoder(enc, tok, maxlen=128)
    losses = finetune_cross_encoder(ce, train, seconds=args.train_seconds, batch_size=16, lr=5e-5)
    held = test[:300]
    ce_rho = spearman(ce.score([(p.a, p.b) for p in held]), torch.tensor([p.score for p in held]))
    print(f"cross-encoder: {len(losses)} steps; Spearman on 300 test pairs = {ce_rho:.4f}")

    R = score_matrix(ce, anchor_q, items, "offline anchor-query rows R")
    M = score_matrix(ce, queries, items, "ground truth (exact) for the test queries")
    truth = [M[i].topk(10).indices for i in range(len(queries))]
    # How query-independent is the cross-encoder? Share of score variance explained by each item's
    # mean score over queries (a rank-1 "item bias" that CUR captures with very few anchors).
    centred = M - M.mean()
    item_bias_share = float(1 - ((M - M.mean(0, keepdim=True)) ** 2).sum() / (centred ** 2).sum())
    sv = torch.linalg.svdvals(centred)
    top5_energy = float((sv[:5] ** 2).sum() / (sv ** 2).sum())
    print(f"score matrix: item-bias share of variance {item_bias_share:.3f}, top-5 singular energy {top5_energy:.3f}")

    bi_items, bi_q = embed(bi_model, tok, items), embed(bi_model, tok, queries)
    bi_rank = (bi_q @ bi_items.T).argsort(dim=1, descending=True)
    curve: dict[str, dict[int, float]] = {"bi-encoder only (0 calls)": {0: sum(
        recall_at_k(bi_rank[i, :10], truth[i]) for i in range(len(queries))) / len(queries)}}
    budgets = [10, 20, 30, 40, 60, 80, 100]
    curve["bi-encoder top-B + CE re-rank"] = {
        b: sum(recall_at_k(rerank_search(bi_rank[i, :b], lambda idx, i=i: M[i, idx], 10), truth[i])
               for i in range(len(queries))) / len(queries) for b in budgets}
    for k_i in (10, 20, 30):
        cur = CUR.fit(R, random_anchors(len(items), k_i, seed=0))
        curve[f"CUR, {k_i} anchor items"] = {
            b: sum(recall_at_k(cur_search(cur, lambda idx, i=i: M[i, idx], 10, b)[0], truth[i])
                   for i in range(len(queries))) / len(queries) for b in budgets if b >= k_i}

    cols = [0] + budgets
    print(f"\nrecall@10 vs exact cross-encoder top-10; {len(items)} items, {len(queries)} queries, "
          f"{len(anchor_q)} anchor queries (cross-encoder calls per query in the header)")
    print("| method | " + " | ".join(str(c) for c in cols) + " |\n|---|" + "---:|" * len(cols))
    for name, row in curve.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in cols) + " |")
    result = {"items": len(items), "queries": len(queries), "anchor_queries": len(anchor_q),
              "cross_encoder_layers": args.layers, "cross_encoder_train_steps": len(losses),
              "cross_encoder_spearman_300_test_pairs": ce_rho, "item_bias_share": item_bias_share,
              "top5_singular_energy": top5_energy, "recall_at_10": curve}
    (out / "cur_search.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, row in curve.items():
            xs = sorted(row)
            ax.plot(xs, [row[x] for x in xs], "o-" if len(xs) > 1 else "k*", label=name, markersize=6)
        ax.set_xlabel("cross-encoder calls per query")
        ax.set_ylabel("recall@10 vs exact cross-encoder")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "cur_search.png", dpi=120)
    except ImportError:
        pass
    print(f"wrote {out}/cur_search.json and cur_search.png")


if __name__ == "__main__":
    main()
