"""``kexue demo``: the flagship — sentence vectors with the real all-MiniLM-L6-v2 and kexue-zh-mini, offline.

On the English STS benchmark (``../shared/data/sts-b-en``):
zero-shot Spearman on test → CoSENT fine-tune on train for a CPU budget → Spearman again (must
improve) → BERT-whitening x̃ = (x − β·μ)·U·Λ^(−γ/2) to 256/128/64 dims, fitted on train vectors →
Spearman and exact-search speed for each; plus the post's (β, γ, k) grid. Prints the tables and
writes ``metrics.json``, ``score_vs_dims.png`` and the whitening transform under ``--out``.
Then the Chinese half (:mod:`kexue.recipes.demo_zh`): kexue-zh-mini + CoSENT on STS-B-zh, Chinese semantic search.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from kexue.data import shipped as datasets
from kexue.io import save_figure, write_json
from kexue.models.pretrained import embed, minilm
from kexue.similarity.evaluate import pair_cosines, spearman
from kexue.similarity.finetune import finetune_cosent
from kexue.similarity.search import TorchIndex
from kexue.similarity.whitening import Whitening

DIMS = (384, 256, 128, 64)
GRID = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.5)]


def _spearman(vec: dict[str, torch.Tensor], pairs, transform=None) -> float:
    encode = (lambda t: vec_lookup(vec, t)) if transform is None else (lambda t: transform(vec_lookup(vec, t)))
    return spearman(pair_cosines(encode, [p.a for p in pairs], [p.b for p in pairs]),
                    torch.tensor([p.score for p in pairs]))


def vec_lookup(vec: dict[str, torch.Tensor], texts: list[str]) -> torch.Tensor:
    return torch.stack([vec[t] for t in texts])


def search_speed(vectors: torch.Tensor, k: int = 10, min_seconds: float = 0.5) -> float:
    """Queries/s of exact top-k search with every test sentence as a query against all of them."""
    index = TorchIndex(vectors.shape[1])
    index.add(vectors)
    index.search(vectors[:64], k)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        index.search(vectors, k)
        n += vectors.shape[0]
    return n / (time.perf_counter() - t0)


def _table(header: list[str], rows: list[list]) -> str:
    fmt = lambda x: f"{x:.4f}" if isinstance(x, float) and abs(x) < 10 else (f"{x:,.0f}" if isinstance(x, float) else str(x))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, key), color in [(("zero-shot", "zero_shot"), "tab:blue"), (("CoSENT fine-tuned", "finetuned"), "tab:red")]:
        for (b, g), style in [((0.0, 0.0), "-o"), ((1.0, 1.0), "--s"), ((1.0, 0.5), ":^")]:
            ys = [metrics["grid"][key][f"beta={b},gamma={g},k={k}"] for k in DIMS]
            ax.plot(DIMS, ys, style, color=color, label=f"{name}, β={b:g} γ={g:g}")
    ax.set_xlabel("dims kept (k)")
    ax.set_ylabel("Spearman, STS-B en test")
    ax.set_xticks(DIMS)
    ax.set_title("BERT-whitening on all-MiniLM-L6-v2 (kexue)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def build_parser():
    from kexue.recipes import args as at
    from kexue.recipes import demo_zh

    ap = at.ArgumentParser(prog="kexue demo", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("both", "en", "zh"), default="both",
                    help="the halves to run: en (MiniLM on STS-B en), zh (kexue-zh-mini on STS-B zh) or both, en first")
    ap.add_argument("--out", default="runs/demo",
                    help="folder for metrics.json, score_vs_dims.png, whitening and the fine-tuned encoder/ and encoder-zh/")
    ap.add_argument("--train-seconds", type=at.positive_float, default=None,
                    help="optional wall-clock cap of the CoSENT fine-tune (results then depend on the machine's load)")
    ap.add_argument("--max-steps", type=at.positive_int, default=300,
                    help="fine-tuning steps (about 150 s on 2 idle CPU cores)")
    ap.add_argument("--batch-size", type=at.positive_int, default=16, help="sentence pairs per fine-tuning step")
    ap.add_argument("--lr", type=at.positive_float, default=1e-4, help="fine-tuning learning rate")
    ap.add_argument("--fit-sentences", type=at.positive_int, default=2000, help="train sentences the whitening is fitted on")
    ap.add_argument("--threads", type=at.positive_int, default=1,
                    help="torch threads; 1 is the robust default on a shared 2-core machine (2 threads "
                         "under contention measured ~10x slower per training step)")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo_zh.add_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    import json

    from kexue.recipes import args as at
    from kexue.recipes import demo_zh

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = at.check_output_dir(args.out, unit=False)  # a bad --out fails now, not after the fine-tune
    # One metrics.json for both halves: a half run alone replaces only its own part (English at the top
    # level, Chinese under "zh").
    path = out / "metrics.json"
    metrics = {}
    if path.is_file():
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics = None
        if not isinstance(metrics, dict):
            raise at.UsageError(f"{path} is not a JSON object from an earlier demo; remove it or choose another --out")
    summary = []
    if args.only in ("both", "en"):
        en = run_en(args, out, progress)
        metrics = {**en, **({"zh": metrics["zh"]} if "zh" in metrics else {})}
        write_json(path, metrics)
        demo_zh.require_gain("en (all-MiniLM-L6-v2, STS-B en test)", en["zero_shot_spearman"], en["finetuned_spearman"])
        summary.append(f"en: all-MiniLM-L6-v2 STS-B en test Spearman {en['zero_shot_spearman']:.4f} -> "
                       f"{en['finetuned_spearman']:.4f} after {en['train']['steps']} CoSENT steps; {en['seconds']:.0f}s")
    if args.only in ("both", "zh"):
        zh = demo_zh.run(args, out, progress)[0]
        metrics["zh"] = zh
        write_json(path, metrics)
        summary.append(demo_zh.summary_line(zh))
        demo_zh.require_gain("zh (kexue-zh-mini, STS-B-zh valid)", zh["zero_shot"]["spearman"],
                             zh["finetuned"]["spearman"])
    print("\nsummary (" + str(path) + ")\n" + "\n".join(summary))
    return 0


def run_en(args, out: Path, progress: bool = True) -> dict:
    """The English half: prints its tables, writes the PNG, the whitening and encoder/; returns its metrics
    (the caller writes them and fails loudly if fine-tuning did not improve Spearman)."""
    torch.manual_seed(0)
    t_start = time.perf_counter()

    train, test = datasets.sts_en("train"), datasets.sts_en("test")
    test_sents = sorted({s for p in test for s in (p.a, p.b)})
    train_sents = sorted({s for p in train for s in (p.a, p.b)})
    fit_sents = random.Random(0).sample(train_sents, min(args.fit_sentences, len(train_sents)))
    model, tok = minilm()
    print(f"STS-B en: {len(train)} train pairs, {len(test)} test pairs ({len(test_sents)} test sentences); "
          f"all-MiniLM-L6-v2 via kexue, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params")

    def vectors(sents: list[str], desc: str) -> dict[str, torch.Tensor]:
        print(f"embedding {len(sents)} {desc} sentences")
        return dict(zip(sents, embed(model, tok, sents, batch_size=128, progress=progress)))

    stages = {}
    for stage in ("zero_shot", "finetuned"):
        if stage == "finetuned":
            t0 = time.perf_counter()
            losses = finetune_cosent(model, tok, train, seconds=args.train_seconds, batch_size=args.batch_size,
                                     lr=args.lr, max_steps=args.max_steps, progress=progress)
            train_info = {"steps": len(losses), "pairs_seen": len(losses) * args.batch_size,
                          "seconds": time.perf_counter() - t0, "first20_loss": sum(losses[:20]) / len(losses[:20]),
                          "last20_loss": sum(losses[-20:]) / len(losses[-20:])}
            print(f"fine-tuned {train_info['steps']} steps ({train_info['pairs_seen']} pairs) in "
                  f"{train_info['seconds']:.0f}s, mean loss first/last 20 steps {train_info['first20_loss']:.3f} -> {train_info['last20_loss']:.3f}")
        test_vec, fit_vec = vectors(test_sents, "test"), vectors(fit_sents, "train (whitening fit)")
        stages[stage] = (test_vec, torch.stack([fit_vec[s] for s in fit_sents]))
        print(f"{stage}: Spearman on test = {_spearman(test_vec, test):.4f}")

    zs, ft = _spearman(stages["zero_shot"][0], test), _spearman(stages["finetuned"][0], test)
    metrics = {"zero_shot_spearman": zs, "finetuned_spearman": ft, "train": train_info, "grid": {}, "dims": {}}

    # (β, γ, k) grid on both models: one fit each, then only the cheap transforms vary.
    for stage, (test_vec, fit_mat) in stages.items():
        base = Whitening.fit(fit_mat)
        metrics["grid"][stage] = {
            f"beta={b},gamma={g},k={k}": _spearman(test_vec, test, base.with_params(b, g, k))
            for b, g in GRID for k in DIMS}
        if stage == "finetuned":  # the fine-tuned encoder (kexue embed/search/serve DIR), its whitening recorded as
            # post-processing (Whitening.from_folder; with_params(β, γ, k) picks another setting)
            from kexue.recipes.folder import save_encoder

            save_encoder(out / "encoder", model, tok, whitening=base.with_params(0.0, 0.0, 256))
            print(f"saved the fine-tuned encoder with its whitening to {out / 'encoder'} "
                  f"(try: kexue search {out / 'encoder'} --corpus FILE QUERY)")

    # The main table: fine-tuned vectors reduced to k dims by BERT-whitening, exact search speed at each k.
    test_vec, fit_mat = stages["finetuned"]
    base = Whitening.fit(fit_mat)
    test_mat = torch.stack([test_vec[s] for s in test_sents])
    qps = search_speed(test_mat)
    rows = [["zero-shot", 384, "none", zs, search_speed(torch.stack([stages["zero_shot"][0][s] for s in test_sents]))],
            ["CoSENT fine-tuned", 384, "none", ft, qps]]
    metrics["dims"]["384"] = {"spearman_beta0_gamma0": ft, "queries_per_s": qps}
    for k in DIMS[1:]:
        qps = search_speed(base.with_params(1.0, 1.0, k).transform(test_mat))
        metrics["dims"][str(k)] = {"queries_per_s": qps}
        # Classic whitening (β = γ = 1) and the pure rotation + truncation (β = γ = 0, i.e. PCA without
        # centring) that the post recommends for already-supervised vectors.
        for (b, g), label in [((1.0, 1.0), "β=1 γ=1 (whitening)"), ((0.0, 0.0), "β=0 γ=0 (rotation)")]:
            rho = metrics["grid"]["finetuned"][f"beta={b},gamma={g},k={k}"]
            rows.append(["fine-tuned + BERT-whitening", k, label, rho, qps])
            metrics["dims"][str(k)][f"spearman_beta{b:g}_gamma{g:g}"] = rho
    print("\nSTS-B en test, all-MiniLM-L6-v2 through kexue (exact top-10 search over the "
          f"{len(test_sents)} test sentences, every one a query)")
    print(_table(["model", "dims", "transform", "Spearman", "search queries/s"], rows))

    print("\n(β, γ, k) grid — Spearman on test, whitening fitted on train sentences (《当BERT-whitening引入超参数》)")
    grid_rows = [[stage, f"β={b:g} γ={g:g}"] + [metrics["grid"][stage][f"beta={b},gamma={g},k={k}"] for k in DIMS]
                 for stage in stages for b, g in GRID]
    print(_table(["model", "(β, γ)"] + [f"k={k}" for k in DIMS], grid_rows))

    metrics["seconds"] = time.perf_counter() - t_start
    _plot(metrics, out / "score_vs_dims.png")
    print(f"\nwrote {out}/score_vs_dims.png ({metrics['seconds']:.0f}s for the English half)")
    if ft > zs:
        print(f"fine-tuning improved test Spearman {zs:.4f} -> {ft:.4f} (+{ft - zs:.4f})")
    return metrics
