"""Spearman evaluation on every STS pair set: ρ = Pearson(rank(cos(u_i, v_i)), rank(y_i)).

Spearman's ρ is what the posts report (《无监督语义相似度哪家强？我们做了个比较全面的评测》):
it only asks the model to *order* pairs like the human scores do, which is all retrieval needs.
``kexue evaluate`` prints the table for a model on sts-b-zh train/valid/test and sts-b-en train/dev/test.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.data import shipped as datasets
from kexue.data.inputs import check_pairs

STS_SETS: tuple[tuple[str, str], ...] = (
    ("zh", "train"), ("zh", "valid"), ("zh", "test"), ("en", "train"), ("en", "dev"), ("en", "test"),
)
Encoder = Callable[[list[str]], Tensor]


def rankdata(x: Tensor) -> Tensor:
    """1-based ranks with ties given their average rank (scipy's ``method='average'``)."""
    x = x.reshape(-1).double()
    order = torch.argsort(x, stable=True)
    xs = x[order]
    # Group equal values; each group's rank is the mean of the positions it spans.
    new_group = torch.ones_like(xs, dtype=torch.bool)
    new_group[1:] = xs[1:] != xs[:-1]
    gid = torch.cumsum(new_group.long(), 0) - 1
    pos = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    counts = torch.bincount(gid).double()
    mean_rank = torch.zeros_like(counts).index_add_(0, gid, pos) / counts
    ranks = torch.empty_like(x)
    ranks[order] = mean_rank[gid]
    return ranks


def spearman(pred: Tensor | Sequence[float], gold: Tensor | Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences."""
    pred, gold = torch.as_tensor(pred).reshape(-1), torch.as_tensor(gold).reshape(-1)
    if pred.numel() != gold.numel():
        raise ValueError(f"spearman needs equal lengths, got {pred.numel()} and {gold.numel()}")
    if pred.numel() < 2:
        raise ValueError("spearman needs at least 2 values")
    a, b = rankdata(pred), rankdata(gold)
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def pair_cosines(encode: Encoder, a: Sequence[str], b: Sequence[str]) -> Tensor:
    """cos(encode(a_i), encode(b_i)), each distinct sentence encoded once."""
    check_pairs(a, b)
    uniq = sorted(set(a) | set(b))
    where = {s: i for i, s in enumerate(uniq)}
    v = encode(uniq)
    ia = torch.tensor([where[s] for s in a])
    ib = torch.tensor([where[s] for s in b])
    return F.cosine_similarity(v[ia], v[ib], dim=-1)


def evaluate_pairs(encode: Encoder, pairs: Sequence[datasets.Pair]) -> float:
    """Spearman of the cosine similarities against the gold scores of ``pairs``."""
    a, b, y = [p.a for p in pairs], [p.b for p in pairs], [p.score for p in pairs]
    check_pairs(a, b, y)
    return spearman(pair_cosines(encode, a, b), torch.tensor(y))


def evaluate_sts(encode: Encoder, sets: Sequence[tuple[str, str]] = STS_SETS,
                 limit: int | None = None, progress: bool = False) -> dict[str, float]:
    """``{"en/test": ρ, …}`` over the STS sets (``limit`` keeps the first pairs of each, for quick runs)."""
    from tqdm import tqdm

    out = {}
    for lang, split in tqdm(sets, desc="STS sets", unit="set", disable=not progress):
        pairs = datasets.sts(lang, split)[:limit] if limit else datasets.sts(lang, split)
        out[f"{lang}/{split}"] = evaluate_pairs(encode, pairs)
    return out


def format_table(rows: dict[str, dict[str, float]], digits: int = 4) -> str:
    """Markdown table: one row per model, one column per STS set."""
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.{digits}f}" if c in r else "" for c in cols) + " |")
    return "\n".join(lines)
