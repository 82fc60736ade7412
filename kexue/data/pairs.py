"""Sentence-pair files: the two layouts the similarity posts' data comes in, read with clear errors.

* TSV ``sentence1 \\t sentence2 \\t label`` (senteval_cn / text2vec layout: STS-B scores 0–5, ATEC / BQ /
  LCQMC / PAWSX labels 0/1), no header;
* JSON lines ``{"sentence1": ..., "sentence2": ..., "label": ...}``;
* the STS benchmark table: a header naming (at least) ``split``, ``score``, ``sentence1``, ``sentence2``
  (sts-b-en's ``stsbenchmark.tsv.gz``), read by :func:`read_sts_table`.

A malformed line is reported as ``file:line: what is wrong`` and nothing is skipped silently; the shipped
data (:mod:`kexue.data.shipped`) is read by these same readers.
``sim_zh`` splits the four Chinese sets of the CoSENT post's table (one labelled file each in
``shared/data/sim-zh``) into a seeded train / dev split grouped by sentence (:mod:`kexue.data.splits`: no
sentence on both sides; ``sim_zh_split(...).report`` says what the split shares and drops).
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from kexue.data.files import DataError, read_lines
from kexue.data.paths import data_root
from kexue.data.splits import PairSplit, grouped_split

SIM_ZH_SETS = ("ATEC", "BQ", "LCQMC", "PAWSX")
STS_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Pair:
    """A scored sentence pair (STS-B style)."""

    a: str
    b: str
    score: float


class PairFileError(DataError):
    """A pair file has a malformed line; the message starts with ``file:line:``."""


def _pair_lines(path: Path) -> list[str]:
    try:
        return read_lines(path)
    except DataError as e:
        raise PairFileError(str(e)) from None


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


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Every pair of a TSV or JSON-lines file (the format is read from the first non-blank line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pair file at {path}")
    pairs: list[Pair] = []
    jsonl = None
    for n, line in enumerate(_pair_lines(path), 1):
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
        pairs.append(Pair(_sentence(a, where, "sentence1"), _sentence(b, where, "sentence2"), _label(y, where)))
    if not pairs:
        raise PairFileError(f"{path}: no sentence pairs")
    return pairs


def read_sts_table(path: str | os.PathLike, split: str, splits: tuple[str, ...] = STS_SPLITS) -> list[Pair]:
    """The ``split`` rows of an STS-benchmark table (TAB-separated, ``*.gz`` allowed): the header names the
    columns, among them ``split`` (one of ``splits``), ``score`` (a finite number), ``sentence1`` and
    ``sentence2`` (non-blank, kept verbatim); every row has the header's number of columns."""
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(splits)}, got {split!r}")
    path = Path(path)
    lines = _pair_lines(path)
    if not lines:
        raise PairFileError(f"{path}: empty file, expected a header line")
    header = lines[0].split("\t")
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("split", "score", "sentence1", "sentence2") if c not in col]
    if missing:
        raise PairFileError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}")
    pairs = []
    for n, line in enumerate(lines[1:], 2):
        where = f"{path}:{n}"
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise PairFileError(f"{where}: {len(parts)} tab-separated columns, the header has {len(header)}")
        if parts[col["split"]] not in splits:
            raise PairFileError(f"{where}: split {parts[col['split']]!r} is not one of {', '.join(splits)}")
        a, b = parts[col["sentence1"]], parts[col["sentence2"]]
        _sentence(a, where, "sentence1")  # checked, but kept verbatim (the benchmark's own text)
        _sentence(b, where, "sentence2")
        score = _label(parts[col["score"]], where)
        if parts[col["split"]] == split:
            pairs.append(Pair(a, b, score))
    if not pairs:
        raise PairFileError(f"{path}: no {split!r} rows")
    return pairs


@functools.lru_cache(maxsize=16)
def _grouped_file(path: str, stamp: tuple, dev_fraction: float, seed: int) -> PairSplit:
    return grouped_split(read_pairs(path), dev_fraction, seed)  # cached per file version (``stamp``)


def sim_zh_split(name: str, dev_fraction: float = 0.2, seed: int = 0) -> PairSplit:
    """The seeded train / dev split of a sim-zh set, grouped by sentence (:func:`kexue.data.splits.grouped_split`:
    whole components of the sentence graph, no sentence on both sides), with its
    :class:`~kexue.data.splits.SplitReport` (``.report.line(name)`` prints the overlap and dropped pairs)."""
    if name not in SIM_ZH_SETS:
        raise ValueError(f"unknown sim-zh set {name!r}; known: {', '.join(SIM_ZH_SETS)}")
    path = data_root() / "sim-zh" / f"{name}.valid.data"
    if not path.is_file():
        raise FileNotFoundError(f"no pair file at {path}")
    st = path.stat()
    return _grouped_file(str(path.resolve()), (st.st_mtime_ns, st.st_size), dev_fraction, seed)


def sim_zh(name: str, split: str, dev_fraction: float = 0.2, seed: int = 0) -> list[Pair]:
    """``split`` ("train" / "dev") of a sim-zh set: :func:`sim_zh_split`'s side, in the file's order."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    if name not in SIM_ZH_SETS:
        raise ValueError(f"unknown sim-zh set {name!r}; known: {', '.join(SIM_ZH_SETS)}")
    return list(getattr(sim_zh_split(name, dev_fraction, seed), split))
