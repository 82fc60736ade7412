"""The CoSENT post's comparison on the five Chinese sets: CoSENT vs SBERT (softmax) vs cosine regression,
from scratch, from kexue-zh-mini and from all-MiniLM-L6-v2; dev Spearman (×100) and its curve over steps.

    python experiments/cosent_zh.py [--steps 150] [--sets ATEC,BQ,LCQMC,PAWSX,STS-B] [--starts scratch,zh-mini,minilm]
                                    [--device cuda] [--out DIR]
    python experiments/cosent_zh.py --merge DIR1 DIR2 ... --out DIR   # one table from runs done in parallel

The committed results: one process per set on one GPU, then --merge:
    python experiments/cosent_zh.py --sets ATEC --steps 800 --eval-every 100 --dev-limit 2000 --device cuda --out R/ATEC

ATEC / BQ / LCQMC / PAWSX: a seeded 80/20 split of the one labelled file in shared/data/sim-zh (the official
test splits are not available offline), grouped by sentence (``--split grouped``, the default: no sentence on
both sides, kexue.data.splits) or, to reproduce the first table, cut pair by pair (``--split pair``: most BQ dev
pairs then share a sentence with train); what each split shares is printed and stored in results.json.
STS-B: sts-b-zh train → valid (the official splits). Published anchors (text2vec's README,
a base-size MacBERT trained per set with CoSENT): ATEC 50.39, BQ 72.93, LCQMC 79.17, PAWSX 60.86, STS-B 79.30.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _report import pyplot, save_figure
from _similarity_setup import parse

from kexue.data import shipped as datasets
from kexue.models import pretrained
from kexue.io import atomic_write, write_json
from kexue.similarity.pair_training import LOSSES, train_pair_encoder
from kexue.data.pairs import read_pairs, sim_zh_split
from kexue.data.paths import data_root
from kexue.data.splits import split_by_pair
from kexue.recipes.common import model_and_tokenizer

ANCHORS = {"ATEC": 50.39, "BQ": 72.93, "LCQMC": 79.17, "PAWSX": 60.86, "STS-B": 79.30}


def data(name: str, limit: int, split: str = "grouped"):
    """(train, dev[:limit], split report or None) of a set."""
    if name == "STS-B":
        return datasets.sts_zh("train"), datasets.sts_zh("valid")[:limit], None
    if split == "grouped":
        cut = sim_zh_split(name)
    else:
        cut = split_by_pair(read_pairs(data_root() / "sim-zh" / f"{name}.valid.data"), 0.2, 0)
    print(cut.report.line(name), flush=True)
    return list(cut.train), list(cut.dev)[:limit], cut.report


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
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--split", choices=("grouped", "pair"), default="grouped",
                    help="sim-zh train / dev: grouped by sentence, or the leaky pair-by-pair cut")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only merge these runs' results.json into --out")
    ap.add_argument("--compare", metavar="DIR", help="with --merge: also write table_vs.md, each cell DIR's "
                    "results.json (an earlier run, e.g. on the pair-by-pair split) → the merged one")
    args, out = parse(ap, "experiments/results/cosent_zh")
    if args.merge:
        runs = [json.loads((Path(d) / "results.json").read_text()) for d in args.merge]
        rows = [r for run in runs for r in run["rows"]]
        meta = {k: v for k, v in runs[0].items() if k != "rows"}
        meta["splits"] = {k: v for run in runs for k, v in run.get("splits", {}).items()}
        meta["starts"] = ",".join(dict.fromkeys(r["start"] for r in rows))
        write_json(out / "results.json", {**meta, "rows": rows})
        if args.compare:
            compare(json.loads((Path(args.compare) / "results.json").read_text()), {**meta, "rows": rows}, out)
        return table(rows, out, meta)
    rows, splits = [], {}
    for name in args.sets.split(","):
        train, dev, report = data(name, args.dev_limit, args.split)
        if report is not None:
            splits[name] = report.as_dict()
        for kind in args.starts.split(","):
            for loss in args.losses.split(","):
                model, tok = start(kind, train)
                model.to(args.device)
                t0 = time.perf_counter()
                lr = 1e-3 if kind == "scratch" else 2e-5 if kind == "minilm" else 1e-4
                h = train_pair_encoder(model, tok, train, loss, steps=args.steps, batch_size=32, lr=lr, maxlen=64,
                                       dev=dev, eval_every=args.eval_every, progress=False)
                curve = [(e["step"], round(100 * e["spearman"], 2)) for e in h["eval"]]
                best = max(curve, key=lambda c: c[1])
                # steps to converge: the first evaluation within 1 point of the best one
                converged = next(step for step, sp in curve if sp >= best[1] - 1.0)
                rows.append({"set": name, "start": kind, "loss": loss, "lr": lr, "spearman": curve[-1][1],
                             "best": best[1], "best_step": best[0], "converged_step": converged, "curve": curve,
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), flush=True)
                meta = {"steps": args.steps, "eval_every": args.eval_every, "dev_limit": args.dev_limit,
                        "device": args.device, "split": args.split, "splits": splits, "starts": args.starts}
                write_json(out / "results.json", {**meta, "rows": rows})
    table(rows, out, meta)


def compare(old: dict, new: dict, out: Path) -> None:
    """table_vs.md: final (best) dev Spearman of each (set, start, loss) the new run has, the old run's → the new."""
    words = lambda m: "grouped by sentence" if m.get("split") == "grouped" else "cut pair by pair"  # noqa: E731
    before = {(r["set"], r["start"], r["loss"]): r for r in old["rows"]}
    lines = [f"Dev Spearman ×100 after {new['steps']} updates, final (best): the earlier run (sim-zh dev split "
             f"{words(old)}, device {old.get('device', 'cpu')}) → this one (dev split {words(new)}, device "
             f"{new.get('device', 'cpu')}). Same model, seeds and settings; the training pairs change with the split.", "",
             "| set | start | " + " | ".join(LOSSES) + " |", "|---|---|" + "---|" * len(LOSSES)]
    for name in dict.fromkeys(r["set"] for r in new["rows"]):
        for kind in dict.fromkeys(r["start"] for r in new["rows"] if r["set"] == name):
            got = {r["loss"]: r for r in new["rows"] if r["set"] == name and r["start"] == kind}
            cells = []
            for loss in LOSSES:
                o, n = before.get((name, kind, loss)), got.get(loss)
                cells.append("–" if n is None else (f"{o['spearman']:.2f} ({o['best']:.2f}) → " if o else "")
                             + f"**{n['spearman']:.2f}** ({n['best']:.2f})")
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    atomic_write(out / "table_vs.md", lambda tmp: open(tmp, "w", encoding="utf-8").write(text + "\n"))


def table(rows, out, meta) -> None:
    split = meta.get("split", "pair")  # the first table (no split field) was cut pair by pair
    how = ("grouped by sentence (no sentence on both sides)" if split == "grouped" else
           "cut pair by pair (dev pairs share sentences with train: ATEC 2.6 %, BQ 96.8 %, LCQMC 29.1 %, PAWSX 24.0 %)")
    lines = [f"Dev Spearman ×100 after {meta['steps']} updates (batch 32, maxlen 64, evaluated every "
             f"{meta['eval_every']}; dev ≤ {meta['dev_limit']} pairs; device {meta.get('device', 'cpu')}). "
             f"ATEC / BQ / LCQMC / PAWSX dev: the seeded 80/20 split of the file, {how}; STS-B: sts-b-zh valid. "
             "In brackets: the best evaluation and the first step within 1 point of it (steps to converge).", "",
             "| set | start | CoSENT | SBERT | cosine | anchor (CoSENT, MacBERT-base) |", "|---|---|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["set"] for r in rows):
        for kind in dict.fromkeys(r["start"] for r in rows if r["set"] == name):
            got = {r["loss"]: r for r in rows if r["set"] == name and r["start"] == kind}
            cell = lambda r: f"{r['spearman']:.2f} ({r['best']:.2f} @{r.get('converged_step', r['best_step'])})"
            lines.append(f"| {name} | {kind} | " + " | ".join(cell(got[l]) if l in got else "–" for l in LOSSES)
                         + f" | {ANCHORS[name]} |")
    wins = {}
    for r in rows:
        key = (r["set"], r["start"])
        if key not in wins or r["spearman"] > wins[key]["spearman"]:
            wins[key] = r
    lines += ["", "Best loss per (set, start): " + "; ".join(f"{s}/{k}: {r['loss']}" for (s, k), r in wins.items())]
    text = "\n".join(lines)
    print(text)
    atomic_write(out / "table.md", lambda tmp: open(tmp, "w", encoding="utf-8").write(text + "\n"))
    plt = pyplot()
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.4), squeeze=False)
    colour = {"cosent": "C0", "sbert": "C1", "cosine": "C2"}  # one colour per loss, one line style per start
    style = {"scratch": ":", "zh-mini": "-", "minilm": "--"}
    for ax, name in zip(axes[0], sets):
        for r in rows:
            if r["set"] == name:
                ax.plot(*zip(*r["curve"]), style.get(r["start"], "-."), color=colour[r["loss"]],
                        label=f"{r['loss']} from {r['start']}", lw=1.2)
        ax.set_title(f"{name} (anchor {ANCHORS[name]})")
        ax.set_xlabel("step")
        ax.set_ylabel("dev Spearman ×100")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out / "spearman_vs_steps.png", dpi=90)

if __name__ == "__main__":
    main()
