"""BERT-whitening's (β, γ, k) grid on the five Chinese sets with kexue-zh-mini, beside the posts' numbers.

    PYTHONPATH=. python experiments/whitening_zh.py [--sets ATEC,BQ,LCQMC,PAWSX,STS-B] [--fit-limit 10000]
    PYTHONPATH=. python experiments/whitening_zh.py --finetune 800 [--device cuda]   # -> whitening_zh_finetuned.*

``--finetune N``: first fine-tune kexue-zh-mini with CoSENT for N updates on each set's train pairs (one copy
per set), then run the same grid on its vectors: the case where the hyper-parameter post says classic
whitening hurts (a supervised encoder) and β = γ = 0 with a smaller k is the free lunch.

x̃ = (x − β·μ)·U·Λ^(−γ/2), first k columns (kexue.similarity.whitening; 《你可能不需要BERT-flow》 and
《当BERT-whitening引入超参数：总有一款适合你》). Every sentence of a set is encoded once by the shipped
kexue-zh-mini (4 layers, hidden 256) with three poolings read from the same forward pass: [CLS], mean of
the last layer, first-last-avg (mean of the first and the last Transformer layer, the pooling BERT-whitening's
Chinese code uses). (μ, U, Λ) are fitted on the set's train sentences (one fit per pooling; every (β, γ, k) is
derived from it), and, as the posts do, on the evaluated sentences themselves; dev Spearman of the cosines.
ATEC / BQ / LCQMC / PAWSX: dev = the seeded 80/20 split of the one labelled file in shared/data/sim-zh, grouped
by sentence (``--split grouped``, the default: no sentence on both sides, kexue.data.splits) or cut pair by pair
(``--split pair``, the first run's leaky split); what each split shares is printed and stored.
STS-B: sts-b-zh train → valid (the official splits). maxlen 64 (128 for PAWSX), as in the posts' code.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from _report import pyplot, save_figure, write_report
from _similarity_setup import parse

from kexue.data import shipped as datasets
from kexue.models import pretrained
from kexue.recipes.demo import GRID
from kexue.similarity.evaluate import spearman
from kexue.similarity.pair_training import train_pair_encoder
from kexue.data.pairs import read_pairs, sim_zh_split
from kexue.data.paths import data_root
from kexue.data.splits import split_by_pair
from kexue.similarity.whitening import Whitening

DIMS = (256, 128, 64, 32)  # zh-mini's hidden size is 256: k = 256 keeps every dimension
SETS = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
POOLINGS = ("cls", "mean", "first-last-avg")
SOURCE = {"9079": "《当BERT-whitening引入超参数：总有一款适合你》 (kexue.fm/archives/9079)",
          "8348": "《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》 (kexue.fm/archives/8348)"}
# Published test-set Spearman ×100, 768-dim base models, whitening fitted on all of the task's sentences.
# 9079: a / b / c = no whitening / whitening / whitening to 256 dims, for β = γ = 1 and β = γ = 0.
POST_9079 = {
    "BERT-P4": {"beta=1,gamma=1": {"ATEC": (24.51, 27.00, 27.91), "BQ": (38.81, 32.29, 37.67),
                                   "LCQMC": (64.75, 64.75, 65.65), "PAWSX": (15.12, 17.80, 15.34),
                                   "STS-B": (61.66, 69.45, 69.37)},
                "beta=0,gamma=0": {"ATEC": (24.51, 24.51, 24.59), "BQ": (38.81, 38.81, 38.99),
                                   "LCQMC": (64.75, 64.75, 63.45), "PAWSX": (15.12, 15.12, 14.59),
                                   "STS-B": (61.66, 61.66, 62.30)}},
    "SimBERT-P1": {"beta=1,gamma=1": {"ATEC": (38.50, 23.64, 30.79), "BQ": (48.54, 31.78, 40.01),
                                      "LCQMC": (76.23, 75.05, 74.50), "PAWSX": (15.10, 18.49, 15.64),
                                      "STS-B": (74.14, 73.37, 75.29)},
                   "beta=0,gamma=0": {"ATEC": (38.50, 38.50, 38.81), "BQ": (48.54, 48.54, 48.66),
                                      "LCQMC": (76.23, 76.23, 76.22), "PAWSX": (15.10, 15.10, 14.88),
                                      "STS-B": (74.14, 74.14, 74.46)}},
}
# 8348: a / b = no whitening / BERT-whitening (β = γ = 1, all 768 dims) of RoFormer-base, zh-mini's architecture.
POST_8348_ROFORMER = {"P1": {"ATEC": (24.29, 26.04), "BQ": (41.91, 28.13), "LCQMC": (64.87, 60.92),
                             "PAWSX": (20.15, 23.08), "STS-B": (59.91, 66.96)},
                      "P3": {"ATEC": (24.09, 28.51), "BQ": (39.09, 34.92), "LCQMC": (63.55, 63.85),
                             "PAWSX": (16.53, 18.43), "STS-B": (58.98, 55.30)},
                      "P4": {"ATEC": (25.92, 27.38), "BQ": (41.75, 32.36), "LCQMC": (66.18, 65.45),
                             "PAWSX": (15.30, 18.36), "STS-B": (61.40, 68.02)}}


SPLIT = {"split": "grouped"}  # main() sets it from --split


def split_of(name: str):
    """The sim-zh set's split (PairSplit with its report) under ``SPLIT``."""
    if SPLIT["split"] == "grouped":
        return sim_zh_split(name)
    return split_by_pair(read_pairs(data_root() / "sim-zh" / f"{name}.valid.data"), 0.2, 0)


def data(name: str):
    if name == "STS-B":
        return datasets.sts_zh("train"), datasets.sts_zh("valid")
    cut = split_of(name)
    return list(cut.train), list(cut.dev)


SPLIT_WORDS = {"grouped": "grouped by sentence (no sentence on both sides)",
               "pair": "cut pair by pair (dev pairs share sentences with train: ATEC 2.6 %, BQ 96.8 %, LCQMC 29.1 %, "
                       "PAWSX 24.0 %)"}


def key(b: float, g: float, k: int) -> str:
    return f"beta={b:g},gamma={g:g},k={k}"


def dev_spearman(vec: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, gold: torch.Tensor) -> float:
    return 100 * spearman(F.cosine_similarity(vec[ia], vec[ib], dim=-1), gold)


def run_set(name: str, model, tok, fit_limit: int) -> dict:
    train, dev = data(name)
    dev_sents = list(dict.fromkeys(s for p in dev for s in (p.a, p.b)))
    train_sents = list(dict.fromkeys(s for p in train for s in (p.a, p.b)))
    if fit_limit and len(train_sents) > fit_limit:
        train_sents = random.Random(0).sample(train_sents, fit_limit)
    sents = list(dict.fromkeys(dev_sents + train_sents))
    where = {s: i for i, s in enumerate(sents)}
    t0 = time.perf_counter()
    vecs = pretrained.embed(model, tok, sents, batch_size=64, maxlen=128 if name == "PAWSX" else 64,
                            normalize=False, pooling=POOLINGS)
    seconds = time.perf_counter() - t0
    # dev sentences come first in ``sents``: the pairs index the first len(dev_sents) rows, the only ones transformed
    ia = torch.tensor([where[p.a] for p in dev])
    ib = torch.tensor([where[p.b] for p in dev])
    gold = torch.tensor([p.score for p in dev])
    i_train = torch.tensor([where[s] for s in train_sents])
    i_dev = torch.arange(len(dev_sents))
    if name != "STS-B":
        print(split_of(name).report.line(name), flush=True)
    out = {"train_pairs": len(train), "dev_pairs": len(dev), "fit_sentences_train": len(train_sents),
           "split": split_of(name).report.as_dict() if name != "STS-B" else "sts-b-zh train / valid",
           "dev_sentences": len(dev_sents), "encode_seconds": round(seconds, 1), "poolings": {}}
    for pooling, v in vecs.items():
        # float64: raw cosines of an anisotropic encoder crowd near 1, and float32 rounding would reorder them
        v = v.double()
        res = {"raw": dev_spearman(v, ia, ib, gold)}
        for fit_name, rows in (("train", i_train), ("dev", i_dev), ("train+dev", torch.unique(torch.cat([i_train, i_dev])))):
            base = Whitening.fit(v[rows])  # one SVD; each (β, γ) re-derives U, Λ from it
            res[f"fit={fit_name}"] = {key(b, g, k): dev_spearman(base.with_params(b, g, k)(v[i_dev]), ia, ib, gold)
                                      for b, g in GRID for k in DIMS}
        out["poolings"][pooling] = res
        print(f"{name} {pooling}: raw {res['raw']:.2f}, β=γ=1 full (fit train) "
              f"{res['fit=train'][key(1, 1, DIMS[0])]:.2f}", flush=True)
    return out


def best(grid: dict) -> tuple[str, float]:
    k = max(grid, key=grid.get)
    return k, grid[k]


def summary(results: dict, P: str = "first-last-avg") -> list[str]:
    """What the grid shows, computed from it (so a rerun cannot leave stale prose behind)."""
    rows = {n: s["poolings"][P] for n, s in results["sets"].items()}
    gain = {n: r["fit=train"][key(1, 1, DIMS[0])] - r["raw"] for n, r in rows.items()}
    rot = {k: max(r["raw"] - r["fit=train"][key(0, 0, k)] for r in rows.values()) for k in DIMS[1:]}
    best_k = {n: best(r["fit=train"])[0].replace("beta=", "β=").replace("gamma=", "γ=") for n, r in rows.items()}
    pool = {p: sum(s["poolings"][p]["raw"] for s in results["sets"].values()) / len(rows) for p in POOLINGS}
    return [
        "## What it shows", "",
        f"- Classic whitening (β = γ = 1, all 256 dims, pooling {P}) changes dev Spearman by "
        + ", ".join(f"{n} {g:+.2f}" for n, g in gain.items())
        + f": it helps on {sum(g > 0 for g in gain.values())} of {len(gain)} sets.",
        "- β = γ = 0 (rotation, then the first k dims) loses at most "
        + ", ".join(f"{v:.2f} at k={k}" for k, v in rot.items()) + " (worst set): the post's 'free lunch' at half the dims.",
        "- Best grid cell per set: " + "; ".join(f"{n} {c}" for n, c in best_k.items()) + ".",
        "- Mean raw Spearman over the sets by pooling: " + ", ".join(f"{p} {v:.2f}" for p, v in pool.items()) + ".",
        "- Caveats: kexue-zh-mini was pretrained (MLM, no labels) on every Chinese sentence in shared/data, these "
        "dev sentences included, so it is in-domain here; the posts score 768-dim base models on the official test "
        "splits, so only the direction of each change is comparable, not the levels.", ""]


def tables(results: dict) -> list[str]:
    sets = list(results["sets"])
    P = "first-last-avg"
    split = results.get("split", "pair")  # the first run (no split field) was cut pair by pair
    lines = [f"# BERT-whitening on Chinese with {results['model']} (dev Spearman ×100)", "",
             f"ATEC / BQ / LCQMC / PAWSX dev: the seeded 80/20 split of the file, {SPLIT_WORDS[split]}; "
             "STS-B: sts-b-zh valid.", ""] + summary(results) + [
             f"## (β, γ, k) grid, pooling {P}, whitening fitted on the train sentences", "",
             "β = γ = 0 at k = 256 is a pure rotation: it equals 'no whitening' except where exactly equal cosines "
             "(PAWSX dev pairs whose two sides are the same text) have their ties broken by rounding.", "",
             "| set | (β, γ) | " + " | ".join(f"k={k}" for k in DIMS) + " |", "|---|---|" + "---:|" * len(DIMS)]
    for name in sets:
        r = results["sets"][name]["poolings"][P]
        lines.append(f"| {name} | no whitening | " + " | ".join(f"{r['raw']:.2f}" if k == DIMS[0] else "" for k in DIMS) + " |")
        for b, g in GRID:
            lines.append(f"| {name} | β={b:g} γ={g:g} | "
                         + " | ".join(f"{r['fit=train'][key(b, g, k)]:.2f}" for k in DIMS) + " |")
    lines += ["", "## Poolings: no whitening vs classic whitening (β = γ = 1, all 256 dims) vs the best grid cell "
              "(fit on train)", "",
              "| set | " + " | ".join(f"{p}: raw / whitened / best" for p in POOLINGS) + " |",
              "|---|" + "---|" * len(POOLINGS)]
    for name in sets:
        cells = []
        for p in POOLINGS:
            r = results["sets"][name]["poolings"][p]
            bk, bv = best(r["fit=train"])
            cells.append(f"{r['raw']:.2f} / {r['fit=train'][key(1, 1, DIMS[0])]:.2f} / {bv:.2f} ({bk.replace('beta=', 'β=').replace('gamma=', 'γ=')})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"## Where (μ, U, Λ) are fitted, pooling {P}: β = γ = 1 at k = 256 / best k", "",
              "| set | fit on train | fit on dev (the evaluated sentences) | fit on train + dev |", "|---|---|---|---|"]
    for name in sets:
        r = results["sets"][name]["poolings"][P]
        cells = []
        for f in ("train", "dev", "train+dev"):
            full = r[f"fit={f}"][key(1, 1, DIMS[0])]
            kk = max(DIMS, key=lambda k: r[f"fit={f}"][key(1, 1, k)])
            cells.append(f"{full:.2f} / {r[f'fit={f}'][key(1, 1, kk)]:.2f} (k={kk})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## The posts' numbers beside ours (a / b / c = no whitening / whitening / whitening to a smaller k)", "",
              "Posts: test Spearman ×100 of 768-dim base models (c: 256 dims), whitening fitted on all of the task's "
              "sentences. Ours: dev Spearman ×100 of zh-mini (256 dims; c: 128 dims, the same 1/3 … 1/2 cut), fitted "
              "on the train sentences, pooling first-last-avg.", "",
              "| set | ours β=γ=1 | ours β=γ=0 | BERT-P4 β=γ=1 [9079] | BERT-P4 β=γ=0 [9079] | SimBERT-P1 β=γ=1 [9079] "
              "| RoFormer-P4 a / b [8348] | RoFormer-P1 a / b [8348] |", "|---|---|---|---|---|---|---|---|"]
    for name in sets:
        r = results["sets"][name]["poolings"][P]
        ours = [f"{r['raw']:.2f} / {r['fit=train'][key(b, b, DIMS[0])]:.2f} / {r['fit=train'][key(b, b, 128)]:.2f}"
                for b in (1.0, 0.0)]
        post = [" / ".join(f"{x:.2f}" for x in POST_9079[m][s][name])
                for m, s in (("BERT-P4", "beta=1,gamma=1"), ("BERT-P4", "beta=0,gamma=0"), ("SimBERT-P1", "beta=1,gamma=1"))]
        ro = [" / ".join(f"{x:.2f}" for x in POST_8348_ROFORMER[p][name]) for p in ("P4", "P1")]
        lines.append(f"| {name} | " + " | ".join(ours + post + ro) + " |")
    lines += ["", "[9079] " + SOURCE["9079"] + "; [8348] " + SOURCE["8348"] + " (its a / b columns; c there is SimCSE). "
              "The posts label poolings P1–P4; P4 is read here as first-last-avg and P1 as [CLS] (RoFormer has no "
              "P2 there, i.e. no pooler), an inference from the tables, not a quoted definition.",
              "", f"Encoding {results['encode_seconds']:.0f} s, total {results['seconds']:.0f} s on "
              f"{results['threads']} CPU thread(s), device {results.get('device', 'cpu')}."]
    return lines


def plot(results: dict, path) -> None:
    plt = pyplot()
    sets = list(results["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        r = results["sets"][name]["poolings"]["first-last-avg"]
        for b, g in GRID:
            ax.plot(DIMS, [r["fit=train"][key(b, g, k)] for k in DIMS], "-o", ms=3, label=f"β={b:g} γ={g:g}")
        ax.axhline(r["raw"], color="k", ls="--", lw=1, label="no whitening")
        ax.set_xscale("log", base=2)
        ax.set_xticks(DIMS, [str(k) for k in DIMS])
        ax.set_title(name)
        ax.set_xlabel("dims kept (k)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("dev Spearman ×100")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(GRID) + 1, fontsize=8)
    fig.suptitle(f"BERT-whitening on {results['model']} (first-last-avg, fitted on train)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--fit-limit", type=int, default=10000,
                    help="train sentences (a seeded sample) encoded for the fit per set; 0: all")
    ap.add_argument("--finetune", type=int, default=0, metavar="N",
                    help="CoSENT updates on each set's train pairs before the grid (0: the shipped model as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--split", choices=tuple(SPLIT_WORDS), default="grouped",
                    help="sim-zh train / dev: grouped by sentence, or the leaky pair-by-pair cut")
    args, out = parse(ap, "experiments/results")
    SPLIT["split"] = args.split
    t0 = time.perf_counter()
    label = "kexue-zh-mini" + (f" + CoSENT ({args.finetune} updates on the set's train pairs)" if args.finetune else "")
    results = {"model": label, "grid": [list(x) for x in GRID], "dims": list(DIMS), "fit_limit": args.fit_limit,
               "poolings": list(POOLINGS), "threads": args.threads, "finetune": args.finetune, "device": args.device,
               "split": args.split, "sets": {}}
    for name in args.sets.split(","):
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}; known: {', '.join(SETS)}")
        torch.manual_seed(0)
        model, tok = pretrained.shipped("zh-mini")
        model.to(args.device)
        if args.finetune:
            train_pair_encoder(model, tok, data(name)[0], "cosent", steps=args.finetune, batch_size=32, lr=1e-4,
                               maxlen=64, progress=False)
        results["sets"][name] = run_set(name, model, tok, args.fit_limit)
    results["encode_seconds"] = sum(s["encode_seconds"] for s in results["sets"].values())
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["post_anchors"] = {"sources": SOURCE, "9079": POST_9079, "8348_roformer": POST_8348_ROFORMER}
    stem = "whitening_zh_finetuned" if args.finetune else "whitening_zh"
    write_report(out, stem, tables(results), results)
    plot(results, out / f"{stem}.png")


if __name__ == "__main__":
    main()
