"""Steps vs quality on the real 8×8 digits: every method × NFE ∈ {1, 2, 4, 10, 50, 250}.

Trains each model for ``--steps`` optimizer steps on CPU, samples ``--n`` images per cell with a fixed seed,
and scores them with the Fréchet distance in the features of a small classifier trained on the same real
digits (lower is better) plus class entropies.  Writes experiments/results/diffusion_steps.{md,json,png} and
one sample grid per method at its best NFE.

    PYTHONPATH=. python experiments/diffusion_steps.py --steps 1000 --n 400
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kexue.diffusion import methods
from kexue.data.images import digits, save_grid
from kexue.tools.image_metrics import sample_quality, train_classifier

NFES = (1, 2, 4, 10, 50, 250)
OUT = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per model")
    ap.add_argument("--n", type=int, default=400, help="samples per (method, NFE) cell")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samplers", default=",".join(methods.SAMPLERS))
    ap.add_argument("--nfes", default=",".join(map(str, NFES)))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    samplers = args.samplers.split(",")
    nfes = [int(v) for v in args.nfes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    x, y = digits()
    clf = train_classifier(x, y)
    acc = float((clf(x).argmax(-1) == y).float().mean())
    g = torch.Generator().manual_seed(1)
    baseline = sample_quality(clf, x[torch.randperm(len(x), generator=g)[: args.n]], x)
    print(f"classifier train acc {acc:.3f}; real-subset baseline {baseline}")

    models: dict[str, torch.nn.Module] = {}
    train_s: dict[str, float] = {}
    needed = []
    for s in samplers:
        kind = methods.SAMPLERS[s]
        if kind == "reflow" and "flow" not in needed:
            needed.append("flow")
        if kind not in needed:
            needed.append(kind)
    for kind in needed:
        t0 = time.time()
        print(f"training {kind} ...", flush=True)
        models[kind] = methods.fit(kind, x, args.steps, width=args.width, base=models.get("flow"))
        train_s[kind] = time.time() - t0
        print(f"  {kind}: {train_s[kind]:.0f}s", flush=True)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in samplers:
        results[name] = {}
        best = None
        for nfe in nfes:
            t0 = time.time()
            out = methods.generate(name, models[methods.SAMPLERS[name]], args.n, tuple(x.shape[1:]), nfe)
            if out is None:
                continue
            q = sample_quality(clf, out, x)
            q["sample_s"] = time.time() - t0
            results[name][str(nfe)] = q
            print(f"{name:>13} NFE {nfe:>3}: FD {q['fd']:7.2f}  H(y|x) {q['h_cond']:.3f}  H(y) {q['h_marg']:.3f}"
                  f"  ({q['sample_s']:.1f}s)", flush=True)
            if best is None or q["fd"] < best[0]:
                best = (q["fd"], nfe, out)
        if best is not None:
            save_grid(best[2][:100], args.out / f"diffusion_samples_{name}_nfe{best[1]}.png", scale=3)

    meta = {"steps": args.steps, "n": args.n, "width": args.width, "classifier_acc": acc,
            "real_baseline": baseline, "train_seconds": train_s}
    (args.out / "diffusion_steps.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (args.out / "diffusion_steps.md").write_text(markdown_table(results, nfes, meta))
    plot(results, nfes, baseline["fd"], args.out / "diffusion_steps.png")
    print((args.out / "diffusion_steps.md").read_text())
    return 0


def markdown_table(results, nfes, meta) -> str:
    lines = [f"Fréchet distance in digit-classifier features (lower is better; {meta['n']} samples per cell, "
             f"{meta['steps']} training steps per model, real-subset floor {meta['real_baseline']['fd']:.1f}). "
             "In brackets: mean per-sample class entropy H(y|x) (lower = more legible; real digits "
             f"{meta['real_baseline']['h_cond']:.2f}).", "",
             "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    for name, row in results.items():
        cells = [f"{row[str(n)]['fd']:.1f} ({row[str(n)]['h_cond']:.2f})" if str(n) in row else "–" for n in nfes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results, nfes, floor, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for name, row in results.items():
        ns = [n for n in nfes if str(n) in row]
        ax.plot(ns, [row[str(n)]["fd"] for n in ns], marker="o", label=name)
    ax.axhline(floor, color="gray", ls=":", label="real subset")
    ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", ylabel="Fréchet distance (digits clf)",
           title="Steps vs quality on sklearn digits (8×8)")
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
