"""Sentence-pair files: the two layouts the similarity posts' data comes in, read with clear errors.

* TSV ``sentence1 \\t sentence2 \\t label`` (senteval_cn / text2vec layout: STS-B scores 0–5, ATEC / BQ /
  LCQMC / PAWSX labels 0/1), no header;
* JSON lines ``{"sentence1": ..., "sentence2": ..., "label": ...}``.

A malformed line is reported as ``file:line: what is wrong`` and nothing is skipped silently.
``sim_zh`` splits the four Chinese sets of the CoSENT post's table (one labelled file each in
``shared/data/sim-zh``) into a seeded train / dev split.
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

from kexue.data import shipped as datasets

SIM_ZH_SETS = ("ATEC", "BQ", "LCQMC", "PAWSX")


class PairFileError(ValueError):
    """A pair file has a malformed line; the message starts with ``file:line:``."""


def _label(raw, where: str) -> float:
    try:
        y = float(raw)
    except (TypeError, ValueError):
        raise PairFileError(f"{where}: label {raw!r} is not a number") from None
    if not math.isfinite(y):
        raise PairFileError(f"{where}: label {raw!r} is not finite")
    return y


def _sentence(s, where: str, which: str) -> str:
    if not isinstance(s, str) or not s.strip():
        raise PairFileError(f"{where}: {which} is empty or not a string")
    return s.strip()


def read_pairs(path: str | os.PathLike) -> list[datasets.Pair]:
    """Every pair of a TSV or JSON-lines file (the format is read from the first non-blank line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pair file at {path}")
    pairs: list[datasets.Pair] = []
    jsonl = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{n}"
            if jsonl is None:
                jsonl = line.lstrip().startswith("{")
            if jsonl:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PairFileError(f"{where}: not a JSON object ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise PairFileError(f"{where}: expected a JSON object with sentence1, sentence2, label")
                missing = [k for k in ("sentence1", "sentence2", "label") if k not in obj]
                if missing:
                    raise PairFileError(f"{where}: missing key(s) {', '.join(missing)}")
                a, b, y = obj["sentence1"], obj["sentence2"], obj["label"]
            else:
                cols = line.split("\t")
                if len(cols) != 3:
                    raise PairFileError(f"{where}: expected 3 tab-separated columns (sentence1, sentence2, label), "
                                        f"found {len(cols)}")
                a, b, y = cols
            pairs.append(datasets.Pair(_sentence(a, where, "sentence1"), _sentence(b, where, "sentence2"),
                                       _label(y, where)))
    if not pairs:
        raise PairFileError(f"{path}: no sentence pairs")
    return pairs


def sim_zh(name: str, split: str, dev_fraction: float = 0.2, seed: int = 0) -> list[datasets.Pair]:
    """``split`` ("train" / "dev") of a sim-zh set, a seeded shuffle cut at ``dev_fraction``."""
    if name not in SIM_ZH_SETS:
        raise ValueError(f"unknown sim-zh set {name!r}; known: {', '.join(SIM_ZH_SETS)}")
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    pairs = read_pairs(datasets.data_root() / "sim-zh" / f"{name}.valid.data")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    cut = int(round(len(pairs) * dev_fraction))
    chosen = order[:cut] if split == "dev" else order[cut:]
    return [pairs[i] for i in sorted(chosen)]
