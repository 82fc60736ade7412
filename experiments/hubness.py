"""Hubness (skewness of the k-occurrence N_k) of Gaussian vectors, MiniLM sentence embeddings (raw vs
whitened, by dimension) and GAN latents; and the hubness-prior latent sampling's effect on a digits
GAN's Fréchet distance. Writes experiments/results/hubness.{md,json}.

    PYTHONPATH=. python experiments/hubness.py --gan-steps 800
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kexue.similarity.hubness import hubness, hubness_prior_latents, k_occurrence

OUT = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n", type=int, default=2000, help="vectors per hubness measurement")
    ap.add_argument("--gan-steps", type=int, default=800)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lines, record = [], {}

    gauss = {d: hubness(torch.randn(args.n, d, generator=g), args.k) for d in (2, 8, 32, 128, 384)}
    record["gaussian"] = gauss
    lines += [f"## S_N{args.k} of {args.n} i.i.d. N(0, I_d) vectors", "", "| d | " + " | ".join(map(str, gauss)) + " |",
              "|---|" + "---|" * len(gauss), "| S | " + " | ".join(f"{v:.2f}" for v in gauss.values()) + " |", ""]

    from kexue.data.shipped import sts_en
    from kexue.models.pretrained import embed, minilm
    from kexue.similarity.whitening import Whitening

    sentences = list(dict.fromkeys(s for p in sts_en("train") for s in (p.a, p.b)))[:args.n]
    model, tok = minilm()
    vecs = embed(model, tok, sentences)
    white = Whitening.fit(vecs)
    emb = {}
    for k in (384, 256, 128, 64):
        emb[k] = {"raw (PCA rotation, first k)": hubness(white.with_params(0.0, 0.0, k)(vecs), args.k, "cosine"),
                  "whitened (β = γ = 1)": hubness(white.with_params(1.0, 1.0, k)(vecs), args.k, "cosine")}
    record["minilm"] = emb
    lines += [f"## S_N{args.k} (cosine) of {len(sentences)} all-MiniLM-L6-v2 vectors of STS-B train sentences", "",
              "| dims | raw (PCA rotation, first k) | whitened (β = γ = 1) |", "|---|---|---|"]
    lines += [f"| {k} | {v['raw (PCA rotation, first k)']:.2f} | {v['whitened (β = γ = 1)']:.2f} |" for k, v in emb.items()]
    lines.append("")

    from kexue.generative.gan_train import digit_scorer, train_gan
    from kexue.data.images import digits, save_grid

    x = digits()[0]
    t0 = time.perf_counter()
    gan, _ = train_gan(x, loss="hinge", steps=args.gan_steps, width=32, lr_g=5e-4, lr_d=5e-4, seed=0)
    train_s = time.perf_counter() - t0
    score = digit_scorer()
    z_dim = gan.z_dim
    pool = torch.randn(10000, z_dim, generator=torch.Generator().manual_seed(1))
    nk = k_occurrence(pool, 5)
    q = torch.quantile(nk.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    record["gan_latent"] = {"z_dim": z_dim, "S_N5_pool10000": hubness(pool, 5), "N5_quantiles_50_90_99": q}
    rows = []
    random_z = torch.randn(args.samples, z_dim, generator=torch.Generator().manual_seed(2))
    rows.append(("random z ~ N(0, I)", random_z))
    rows.append(("truncation ψ = 0.7", 0.7 * random_z))
    for t in (10, 20, 50):
        try:
            z = hubness_prior_latents(args.samples, z_dim, k=5, threshold=t, pool=10000,
                                      generator=torch.Generator().manual_seed(3), max_pools=30)
        except ValueError as e:
            lines.append(f"- threshold {t}: {e}")
            continue
        rows.append((f"hubness prior N5 > {t}", z))
    results = []
    for name, z in rows:
        s = gan.sample(len(z), z=z)
        m = score(s)
        results.append({"latents": name, "mean |z|": float(z.norm(dim=1).mean()), **m})
        if name.startswith("hubness prior N5 > 20") or name.startswith("random"):
            save_grid(s[:100], args.out / f"hubness_{'hub' if 'hub' in name else 'random'}.png")
    record["gan_fd"] = results
    record["gan_train_seconds"] = train_s
    lines += [f"## Digits GAN (hinge, SN discriminator, {args.gan_steps} steps, {train_s:.0f} s), {args.samples} samples per row",
              f"z in R^{z_dim}: S_N5 of a pool of 10000 = {record['gan_latent']['S_N5_pool10000']:.2f}, "
              f"N5 median / 90% / 99% = {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}", "",
              "| latents | mean ‖z‖ | FD ↓ | H(y|x) ↓ | H(y) (ln 10 = 2.30) |", "|---|---|---|---|---|"]
    lines += [f"| {r['latents']} | {r['mean |z|']:.2f} | {r['fd']:.1f} | {r['h_cond']:.3f} | {r['h_marg']:.3f} |"
              for r in results]
    text = "\n".join(lines)
    print(text)
    from kexue.io import atomic_write, write_json

    atomic_write(args.out / "hubness.md", lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    write_json(args.out / "hubness.json", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
