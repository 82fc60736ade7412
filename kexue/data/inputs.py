"""Input checks shared by the similarity tools: clear errors instead of silent NaNs or mis-pairings."""
from __future__ import annotations

from typing import Sequence


def check_texts(texts: Sequence[str], name: str = "texts", unique: bool = False) -> list[str]:
    """Non-empty list of non-blank strings; with ``unique`` also no duplicates (search corpora, CUR items)."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"{name}[{i}] is an empty string")
    if unique and len(set(texts)) != len(texts):
        seen: dict[str, int] = {}
        for i, t in enumerate(texts):
            if t in seen:
                raise ValueError(f"{name} has duplicates: [{seen[t]}] and [{i}] are both {t!r}")
            seen[t] = i
    return texts


def check_pairs(a: Sequence[str], b: Sequence[str], labels: Sequence[float] | None = None) -> None:
    """Two sides of equal length (and as many labels), no empty strings."""
    check_texts(a, "first sentences")
    check_texts(b, "second sentences")
    if len(a) != len(b):
        raise ValueError(f"mismatched pairs: {len(a)} first sentences vs {len(b)} second sentences")
    if labels is not None and len(labels) != len(a):
        raise ValueError(f"mismatched labels: {len(a)} pairs vs {len(labels)} labels")


def split_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """``[(a, b), …]`` -> (as, bs), checking every item is a pair of non-empty strings."""
    for i, p in enumerate(pairs):
        if isinstance(p, str) or len(p) != 2:
            raise ValueError(f"pairs[{i}] is not an (a, b) pair: {p!r}")
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    check_pairs(a, b)
    return a, b
