"""Merge the speed benchmarks' saved numbers into ``benchmarks/results.json`` and draw ``results.png``.

Reads ``benchmarks/results/{encoder,generation,training,bert4keras,embed_users,ner_users}.json`` and the GPU runs
``{encoder,generation,training}_cuda.json`` (written by the benchmarks;
``generation_compile.json`` is a ``generation.py --compile`` run saved under that name) and plots,
per benchmark, each engine's speed relative to the HF peer (1.0 = HF; the bert4keras panels: relative
to bert4keras), so the chart shows ratios, which survive a loaded machine better than absolute times.

    python benchmarks/report.py
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load() -> dict:
    out = {}
    for name in ("encoder", "generation", "generation_compile", "training", "bert4keras", "embed_users", "ner_users",
                 "encoder_cuda", "generation_cuda", "training_cuda", "training_cuda_32x512"):
        p = HERE / "results" / f"{name}.json"
        if p.exists():
            out[name] = json.loads(p.read_text())
    return out


def ratio_panels(results: dict) -> list[tuple[str, dict[str, float]]]:
    """(title, {engine: speed / HF speed}) per measured setting."""
    panels = []
    for device, tag in (("", ""), ("_cuda", " [GPU]")):  # GPU runs are saved as <name>_cuda.json
        for shape, rows in results.get("encoder" + device, {}).get("shapes", {}).items():
            hf = rows["hf"]["tokens_per_s"]
            panels.append((f"encoder {shape}{tag}", {k: v["tokens_per_s"] / hf for k, v in rows.items()}))
        for name, extra in (("generation" + device, ""), ("generation_compile" + device, " (+compile)")):
            for row in results.get(name, {}).get("rows", []):
                if row["method"] == "sample":
                    continue
                hf = row["tokens_per_s"]["hf"]
                panels.append((f"{row['family']} b{row['batch']} {row['method']}{extra}{tag}",
                               {k: v / hf for k, v in row["tokens_per_s"].items()}))
        for name in [n for n in results if n.startswith("training" + device) and (device or "cuda" not in n)]:
            run = results[name]
            hf = run["engines"]["hf"]["tokens_per_s"]
            panels.append((f"MLM train step {run['batch']}x{run['length']}{tag}",
                           {k: v["tokens_per_s"] / hf for k, v in run["engines"].items()}))
    b4k = results.get("bert4keras", {})
    runs = [(f"encoder {k}", v["s"]) for k, v in b4k.get("encoder", {}).items()]
    if "unilm_beam" in b4k:
        runs.append((f"UniLM beam {b4k['unilm_beam']['beams']}", b4k["unilm_beam"]["s"]))
    for title, secs in runs:  # seconds per call: speed relative to bert4keras is its time / ours
        panels.append((f"{title} (1.0 = bert4keras)", {k: secs["bert4keras"] / v for k, v in secs.items()}))
    for name, peer, title in (("embed_users", "sentence-transformers fp32", "kexue embed"),
                              ("ner_users", "bert4torch fp32", "NER predictions")):
        rows = {k: v for k, v in results.get(name, {}).get("rows", {}).items() if "seconds" in v}
        if peer in rows:  # the user-level benchmarks: speed relative to the peer users would otherwise run
            panels.append((f"{title} (1.0 = {peer})", {k: rows[peer]["seconds"] / v["seconds"] for k, v in rows.items()}))
    return panels


def plot(panels, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, ratios) in zip(axes.flat, panels):
        names = list(ratios)
        ax.barh(names, [ratios[n] for n in names],
                color=["tab:blue" if n.startswith("kexue") else "tab:gray" for n in names])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("speed relative to HF (1.0 = HF, unless the title names another peer; higher is faster)",
                 fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    from kexue.io import write_json

    results = load()
    if not results:
        raise SystemExit("no benchmark results under benchmarks/results/: run the benchmarks first")
    write_json(HERE / "results.json", results)
    panels = ratio_panels(results)
    plot(panels, HERE / "results.png")
    for title, ratios in panels:
        print(f"{title:<24} " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(f"wrote {HERE / 'results.json'} and {HERE / 'results.png'}")


if __name__ == "__main__":
    main()
