"""The two mathematical posts, with their published numbers beside kexue's.

* 《圆内随机n点在同一个圆心角为θ的扇形的概率》: ``P_n(θ) = Σ_j (−1)^(j−1) C(n,j) (1 − j(1 − θ/2π))_+^(n−1)``
  (kexue.maths.sector), the semicircle's ``n / 2^(n−1)``, and a Monte Carlo of points uniform in the disc
  (``--samples`` draws per n, rejection from the square) on a grid of n and θ, with z-scores.
* 《“十字架”组合计数问题浅试》: the published 27,216 and 54,432; kexue's brute force over all 3^16
  colourings, the Centre-first enumeration and the closed form ``162 k (k−1)(k−2)^7 (3k−5)(4k−5)`` for
  k colours; and the counts under other readings of "dominant", none of which gives 54,432.

    PYTHONPATH=. python experiments/maths_posts.py      # ~30 s on two CPU threads

Writes experiments/results/maths.{md,json}.
"""
from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

from _report import write_report

import torch

from kexue.maths.cross import PUBLISHED, count_brute_force, count_by_enumeration, count_formula
from kexue.maths.sector import sector_monte_carlo, sector_probability

OUT = Path(__file__).resolve().parent / "results"
PI = math.pi
NS = (2, 3, 4, 5, 8)
THETAS = {"π/3": PI / 3, "π/2": PI / 2, "π": PI, "1.2π": 1.2 * PI, "4π/3": 4 * PI / 3, "1.5π": 1.5 * PI,
          "5π/3": 5 * PI / 3, "1.9π": 1.9 * PI}


def readings(k: int = 3) -> dict[str, int]:
    """Colourings counted under several readings of "i-dominant" (a square may then be dominant in more
    than one colour; a colouring counts when some choice of dominant colours satisfies both bars)."""
    rules = {
        "post: i on exactly two sides, the other two different non-i colours":
            lambda s: [i for i in range(k) if s.count(i) == 2 and len({c for c in s if c != i}) == 2],
        "i on exactly two sides (the other two any non-i colours)": lambda s: [i for i in range(k) if s.count(i) == 2],
        "i on at least two sides": lambda s: [i for i in range(k) if s.count(i) >= 2],
        "i strictly the most frequent side colour":
            lambda s: [i for i in range(k) if all(s.count(i) > s.count(j) for j in range(k) if j != i)],
    }
    out = {}
    for name, rule in rules.items():
        arm = {}
        for s in range(k):  # arm[s][dominant set] = number of the k^3 own-side colourings
            for own in itertools.product(range(k), repeat=3):
                key = tuple(rule((s,) + own))
                arm.setdefault(s, {}).setdefault(key, 0)
                arm[s][key] += 1
        total = 0
        for left, right, bottom, top in itertools.product(range(k), repeat=4):
            centre = rule((left, right, bottom, top))
            for (dl, nl), (dr, nr), (db, nb), (dt, nt) in itertools.product(
                    *(arm[s].items() for s in (left, right, bottom, top))):
                if any(len({c, a, b}) == 3 and len({c, e, f}) == 3
                       for c in centre for a in dl for b in dr for e in db for f in dt):
                    total += nl * nr * nb * nt
        out[name] = total
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10**7, help="Monte Carlo draws per n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    lines, record = [], {}

    # ---- the cross
    t0 = time.perf_counter()
    brute = count_brute_force(3)
    brute_s = time.perf_counter() - t0
    ks = list(range(1, 9))
    by_k = {k: {"enumeration": count_by_enumeration(k), "formula": count_formula(k)} for k in ks}
    read = readings(3)
    record["cross"] = {
        "published": PUBLISHED, "post_says_correct": "Wang Huixing",
        "brute_force_k3": brute, "brute_force_seconds": round(brute_s, 2),
        "enumeration_k3": by_k[3]["enumeration"], "formula_k3": by_k[3]["formula"],
        "wu_kang_over_count": PUBLISHED["Wu Kang"] / brute,
        "formula": "162 k (k-1) (k-2)^7 (3k-5) (4k-5)",
        "by_k": {str(k): v for k, v in by_k.items()},
        "readings_k3": read,
    }
    lines += ["## 《“十字架”组合计数问题浅试》 (k = 3)", "", "| | count |", "|---|---|",
              f"| published, Wang Huixing (the post: correct) | {PUBLISHED['Wang Huixing']:,} |",
              f"| published, Wu Kang | {PUBLISHED['Wu Kang']:,} (= {PUBLISHED['Wu Kang'] / brute:g} × kexue's) |",
              f"| kexue brute force, all 3^16 colourings ({brute_s:.1f} s) | {brute:,} |",
              f"| kexue Centre-first enumeration | {by_k[3]['enumeration']:,} |",
              f"| kexue closed form 162k(k−1)(k−2)^7(3k−5)(4k−5) | {by_k[3]['formula']:,} |", "",
              "| k colours | enumeration | formula |", "|---|---|---|"]
    lines += [f"| {k} | {v['enumeration']:,} | {v['formula']:,} |" for k, v in by_k.items()]
    lines += ["", "| reading of \"i-dominant\" (k = 3) | colourings |", "|---|---|"]
    lines += [f"| {name} | {v:,} |" for name, v in read.items()]
    lines.append("")

    # ---- the sector
    grid = list(THETAS.values())
    cells, mc_seconds = [], 0.0
    for n in NS:
        t0 = time.perf_counter()
        hits, draws = sector_monte_carlo(n, grid, samples=args.samples, seed=args.seed)
        mc_seconds += time.perf_counter() - t0
        for (label, theta), h in zip(THETAS.items(), hits.tolist()):
            p = sector_probability(n, theta)
            se = math.sqrt(p * (1 - p) / draws)
            z = (h / draws - p) / se if se > 0 else (0.0 if h == p * draws else math.inf)
            cells.append({"n": n, "theta": label, "theta_rad": theta, "formula": p, "monte_carlo": h / draws,
                          "standard_error": se, "z": z})
    worst = max(abs(c["z"]) for c in cells)
    record["sector"] = {
        "formula": "sum_{j=1}^{min(n, floor(1/a))} (-1)^(j-1) C(n,j) (1 - j a)^(n-1), a = 1 - theta/(2 pi)",
        "semicircle": {str(n): {"formula": sector_probability(n, PI), "n_over_2_pow_n_minus_1": n / 2 ** (n - 1)}
                       for n in NS},
        "monte_carlo": {"draws_per_n": args.samples, "seed": args.seed, "sampler": "uniform in the unit disc by "
                        "rejection from the square; angle by atan2", "seconds": round(mc_seconds, 1),
                        "cells": len(cells), "max_abs_z": worst,
                        "within_3_standard_errors": all(abs(c["z"]) <= 3 for c in cells), "grid": cells},
    }
    lines += ["## 《圆内随机n点在同一个圆心角为θ的扇形的概率》", "",
              f"formula / Monte Carlo ({args.samples:,} draws of n disc points per n, seed {args.seed}) / z", "",
              "| n | " + " | ".join(THETAS) + " |", "|---|" + "---|" * len(THETAS)]
    for n in NS:
        row = [c for c in cells if c["n"] == n]
        lines.append(f"| {n} | " + " | ".join(f"{c['formula']:.5g} / {c['monte_carlo']:.5g} / {c['z']:+.2f}"
                                               for c in row) + " |")
    lines += ["", f"max |z| = {worst:.2f} over {len(cells)} cells ({mc_seconds:.0f} s); semicircle n/2^(n−1): "
              + ", ".join(f"n={n}: {sector_probability(n, PI):g}" for n in NS), ""]
    write_report(args.out, "maths", lines, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
