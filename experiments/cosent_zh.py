"""The CoSENT post's comparison on the five Chinese sets: CoSENT vs SBERT (softmax) vs cosine regression,
from scratch, from kexue-zh-mini and from all-MiniLM-L6-v2; dev Spearman (×100) and its curve over steps.

    python experiments/cosent_zh.py [--steps 150] [--sets ATEC,BQ,LCQMC,PAWSX,STS-B] [--starts scratch,zh-mini,minilm]

ATEC / BQ / LCQMC / PAWSX: a seeded 80/20 split of the one labelled file in shared/data/sim-zh (the official
test splits are not available offline); STS-B: sts-b-zh train → valid. Published anchors (text2vec's README,
a base-size MacBERT trained per set with CoSENT): ATEC 50.39, BQ 72.93, LCQMC 79.17, PAWSX 60.86, STS-B 79.30.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from _similarity_setup import parse

from kexue import datasets, pretrained
from kexue.io import atomic_write, write_json
from kexue.similarity.pair_training import LOSSES, train_pair_encoder
from kexue.similarity.pairs import sim_zh
from kexue.tasks.common import model_and_tokenizer

ANCHORS = {"ATEC": 50.39, "BQ": 72.93, "LCQMC": 79.17, "PAWSX": 60.86, "STS-B": 79.30}


def data(name: str, limit: int):
    if name == "STS-B":
        return datasets.sts_zh("train"), datasets.sts_zh("valid")[:limit]
    return sim_zh(name, "train"), sim_zh(name, "dev")[:limit]


def start(kind: str, train):
    torch.manual_seed(0)
    if kind in pretrained.SHIPPED:
        return pretrained.shipped(kind)
    ns = argparse.Namespace(checkpoint=None, family="roformer")
    return model_and_tokenizer(ns, [s for p in train for s in (p.a, p.b)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--dev-limit", type=int, default=1000, help="dev pairs scored per set")
    ap.add_argument("--sets", default="ATEC,BQ,LCQMC,PAWSX,STS-B")
    ap.add_argument("--starts", default="scratch,zh-mini,minilm")
    args, out = parse(ap, "experiments/results/cosent_zh")
    rows = []
    for name in args.sets.split(","):
        train, dev = data(name, args.dev_limit)
        for kind in args.starts.split(","):
            for loss in LOSSES:
                model, tok = start(kind, train)
                t0 = time.perf_counter()
                lr = 1e-3 if kind == "scratch" else 2e-5 if kind == "minilm" else 1e-4
                h = train_pair_encoder(model, tok, train, loss, steps=args.steps, batch_size=32, lr=lr, maxlen=64,
                                       dev=dev, eval_every=args.eval_every, progress=False)
                curve = [(e["step"], round(100 * e["spearman"], 2)) for e in h["eval"]]
                best = max(curve, key=lambda c: c[1])
                rows.append({"set": name, "start": kind, "loss": loss, "lr": lr, "spearman": curve[-1][1],
                             "best": best[1], "best_step": best[0], "curve": curve,
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), flush=True)
                write_json(out / "results.json", {"steps": args.steps, "dev_limit": args.dev_limit, "rows": rows})
    table(rows, out)


def table(rows, out) -> None:
    lines = ["| set | start | CoSENT | SBERT | cosine | post's anchor (CoSENT, MacBERT-base) |", "|---|---|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["set"] for r in rows):
        for kind in dict.fromkeys(r["start"] for r in rows if r["set"] == name):
            got = {r["loss"]: r["spearman"] for r in rows if r["set"] == name and r["start"] == kind}
            lines.append(f"| {name} | {kind} | " + " | ".join(f"{got[l]:.2f}" if l in got else "–" for l in LOSSES)
                         + f" | {ANCHORS[name]} |")
    text = "\n".join(lines)
    print(text)
    atomic_write(out / "table.md", lambda tmp: open(tmp, "w", encoding="utf-8").write(text + "\n"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for r in rows:
            if r["set"] == name:
                ax.plot(*zip(*r["curve"]), label=f"{r['start']} {r['loss']}", lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("dev Spearman ×100")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(out / "spearman_vs_steps.png", lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


if __name__ == "__main__":
    main()
