"""Contrastive training data: (anchor, positive[, negatives]) lines for InfoNCE and plain sentences for
unsupervised SimCSE (《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》, :mod:`kexue.losses.infonce`).

* a **triplet file**: TSV ``anchor \\t positive [\\t negative ...]``, no header; every line holds the same
  number of hard negatives (InfoNCE stacks them into one ``[N, k, d]`` tensor), zero included;
* a **labelled pair file** (:func:`kexue.data.pairs.read_pairs`: ``sentence1 \\t sentence2 \\t label`` or
  JSON lines): the pairs labelled 1 become (anchor, positive) with in-batch negatives only; the 0 pairs are
  left out (they are not positives, and InfoNCE has no use for them). Graded scores (STS-B's 0–5) need a
  threshold: ``min_score`` keeps the pairs scoring at least that;
* a **sentence file** for SimCSE: one sentence per line; a pair or triplet file gives its sentences.

The layout is read from the first non-blank line: a JSON object is a pair file; three TAB-separated columns
whose last is a number are a labelled pair; two or more columns otherwise are a triplet line. A malformed
line is reported as ``file:line: what is wrong``; nothing is skipped silently.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from kexue.data.files import DataError, read_lines
from kexue.data.pairs import Pair, read_pairs


@dataclass(frozen=True)
class Triplet:
    """An anchor, its positive and its hard negatives (possibly none)."""

    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()


class TripletFileError(DataError):
    """A triplet or sentence file has a malformed line; the message starts with ``file:line:``."""


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise TripletFileError(f"{path}: no such file")
    try:
        return read_lines(path)
    except DataError as e:
        raise TripletFileError(str(e)) from None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def file_layout(path: str | os.PathLike) -> str:
    """``"pairs"``, ``"triplets"`` or ``"sentences"``: the layout of the file's first non-blank line."""
    path = Path(path)
    for line in _lines(path):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            return "pairs"
        cols = line.split("\t")
        if len(cols) == 3 and _is_number(cols[2].strip()):
            return "pairs"
        return "triplets" if len(cols) >= 2 else "sentences"
    raise TripletFileError(f"{path}: empty file")


def pairs_to_triplets(pairs: list[Pair], where: str, min_score: float | None = None) -> list[Triplet]:
    """The positive pairs as (anchor, positive): label 1 of 0/1 labels, or score ≥ ``min_score``."""
    if min_score is None:
        other = sorted({p.score for p in pairs} - {0.0, 1.0})
        if other:
            raise TripletFileError(f"{where}: labels other than 0/1 ({', '.join(f'{y:g}' for y in other[:5])}): "
                                   "give the score from which a pair counts as a positive (--positive-min)")
        min_score = 1.0
    kept = [Triplet(p.a, p.b) for p in pairs if p.score >= min_score]
    if not kept:
        raise TripletFileError(f"{where}: no pair scores ≥ {min_score:g}: no positive pair to train on")
    return kept


def read_triplets(path: str | os.PathLike, min_score: float | None = None) -> list[Triplet]:
    """The (anchor, positive, negatives) of a triplet file, or the positive pairs of a labelled pair file
    (module doc)."""
    path = Path(path)
    if file_layout(path) == "pairs":
        return pairs_to_triplets(read_pairs(path), str(path), min_score)
    if min_score is not None:
        raise TripletFileError(f"{path}: a triplet file has no scores (--positive-min is for labelled pair files)")
    out: list[Triplet] = []
    first: tuple[int, int] | None = None  # (line, number of negatives) of the first triplet
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        where = f"{path}:{n}"
        if len(cols) < 2:
            raise TripletFileError(f"{where}: expected anchor<TAB>positive[<TAB>negative...], found 1 column")
        for i, c in enumerate(cols):
            if not c:
                what = "anchor" if i == 0 else "positive" if i == 1 else f"negative {i - 1}"
                raise TripletFileError(f"{where}: the {what} is empty")
        if first is None:
            first = (n, len(cols) - 2)
        elif len(cols) - 2 != first[1]:
            raise TripletFileError(f"{where}: {len(cols) - 2} negatives, but line {first[0]} has {first[1]}: every "
                                   "line needs the same number of hard negatives")
        out.append(Triplet(cols[0], cols[1], tuple(cols[2:])))
    if not out:
        raise TripletFileError(f"{path}: no triplets")
    return out


def read_sentences(path: str | os.PathLike) -> list[str]:
    """The distinct sentences of a file, in first-seen order: one per line, or every sentence of a pair or
    triplet file."""
    path = Path(path)
    layout = file_layout(path)
    if layout == "pairs":
        texts = [s for p in read_pairs(path) for s in (p.a, p.b)]
    elif layout == "triplets":
        texts = [s for t in read_triplets(path) for s in (t.anchor, t.positive, *t.negatives)]
    else:
        texts = []
        for n, line in enumerate(_lines(path), 1):
            if "\t" in line:
                raise TripletFileError(f"{path}:{n}: a TAB in a file of one sentence per line (line 1 has none)")
            if line.strip():
                texts.append(line.strip())
    return list(dict.fromkeys(texts))


def write_triplets(triplets: list[Triplet], path: str | os.PathLike) -> None:
    """The TSV :func:`read_triplets` reads (atomically); a TAB or line break inside a sentence is refused."""
    from kexue.io import write_text

    for t in triplets:
        for s in (t.anchor, t.positive, *t.negatives):
            if "\t" in s or "\n" in s or "\r" in s:
                raise ValueError(f"cannot write {s!r} into a TSV line: it holds a TAB or a line break")
    write_text(path, "".join("\t".join((t.anchor, t.positive, *t.negatives)) + "\n" for t in triplets))
