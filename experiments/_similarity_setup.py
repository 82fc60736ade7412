"""Shared start of the similarity experiments: --out / --threads, seeding, output folder."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def parse(ap: argparse.ArgumentParser, out_default: str) -> tuple[argparse.Namespace, Path]:
    """Add ``--out``/``--threads`` (1 by default: the machine's 2 cores are shared), parse, seed, mkdir."""
    ap.add_argument("--out", default=out_default)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out
