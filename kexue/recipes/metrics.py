"""Task metrics: entity-level P/R/F1 over span sets, BIO -> spans, answer exact match and char F1.

Entity F1 (CoNLL convention): an entity counts as correct only if type, start and end all match;
P = |pred ∩ gold| / |pred|, R = |pred ∩ gold| / |gold|, F1 = 2PR / (P + R), micro-averaged.
Answer F1 (SQuAD convention, on characters for Chinese): F1 of the bag of characters.
"""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable, Sequence


def bio_to_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """``["B-PER", "I-PER", "O", ...]`` -> ``{("PER", 0, 1)}`` (inclusive ends). Reads BIO, BIOES and BMES:
    ``S-`` is a one-character entity, ``E-`` ends the open entity, ``M-`` is ``I-``; a stray ``I-``/``E-``
    starts an entity. Lenient on purpose: it reads decoded predictions (a CRF's path); training files are
    checked strictly when read (:func:`kexue.data.files.check_tag_sequence`)."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        head, _, label = tag.partition("-")
        head = "I" if head == "M" else head
        if start is not None and (head not in ("I", "E") or label != kind):
            spans.add((kind, start, i - 1))
            start = kind = None
        if head in ("B", "S") or (head in ("I", "E") and start is None):
            start, kind = i, label
        if head in ("S", "E"):
            spans.add((kind, start, i))
            start = kind = None
    return spans


def spans_to_bio(spans: Iterable[tuple[str, int, int]], n: int) -> list[str]:
    """BIO tags of length ``n`` for non-overlapping inclusive spans (a later overlapping span is dropped)."""
    tags = ["O"] * n
    for kind, s, e in sorted(spans, key=lambda x: (x[1], x[2])):
        if e < n and all(t == "O" for t in tags[s:e + 1]):
            tags[s:e + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (e - s)
    return tags


def span_prf(pred: Iterable[set[Hashable]], gold: Iterable[set[Hashable]]) -> dict[str, float]:
    """Micro precision / recall / F1 of predicted vs gold span sets (one set per sentence)."""
    tp = n_pred = n_gold = 0
    for p, g in zip(pred, gold):
        tp += len(p & g)
        n_pred += len(p)
        n_gold += len(g)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_pred": n_pred, "n_gold": n_gold}


def answer_f1(pred: str, gold: str) -> float:
    """Character-bag F1 between two answers."""
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold or not common:
        return float(pred == gold)
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def answer_em(pred: str, gold: str) -> float:
    return float(pred.strip() == gold.strip())
