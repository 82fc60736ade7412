r"""Hard negatives for InfoNCE, mined with the current encoder over a corpus — the training data of
supervised SimCSE-style contrastive learning (《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》,
:mod:`kexue.similarity.contrastive_training`).

For each (anchor :math:`a`, positive :math:`p`) and corpus sentences :math:`c_j` (distinct texts), with
normalised vectors and :math:`s(x, y) = \cos(x, y)`:

    candidates(a, p) = { c_j : c_j ∉ {a, p},  s(a, c_j) ≤ s(a, p) − margin  (if margin),
                                              s(a, c_j) ≤ max_similarity   (if max_similarity) }
    negatives(a, p)  = the k candidates of highest s(a, c_j), most similar first

The most similar sentences that are not the positive are the "hard" negatives; since a corpus holds
unlabelled paraphrases too, ``margin`` (sentence-transformers' ``absolute_margin``) drops those scoring
within ``margin`` of the positive, and ``max_similarity`` those above a fixed similarity, as likely false
negatives. A pair with fewer than ``k`` candidates is left out (counted in :class:`Mined`), so that every
triplet has the same number of negatives (what :func:`kexue.data.triplets.read_triplets` requires).
``kexue mine MODEL --pairs FILE [--corpus FILE] --out triplets.tsv --k 1`` writes the TSV that
``kexue similarity --loss infonce --train triplets.tsv`` reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from kexue.data.triplets import Triplet


@dataclass
class Mined:
    """The triplets, and the pairs left out for lack of ``k`` candidates (their indices)."""

    triplets: list[Triplet]
    left_out: list[int] = field(default_factory=list)


def _normalised(v) -> Tensor:
    v = torch.as_tensor(v).float()
    if v.dim() != 2:
        raise ValueError(f"embed must return [n, d] vectors, got shape {tuple(v.shape)}")
    return torch.nn.functional.normalize(v, dim=-1)


def mine_hard_negatives(embed: Callable[[list[str]], Tensor], pairs: Sequence[tuple[str, str]],
                        corpus: Sequence[str], k: int = 1, margin: float | None = None,
                        max_similarity: float | None = None, chunk: int = 1024) -> Mined:
    """The top-``k`` hard negatives of each (anchor, positive) among ``corpus`` (module doc). ``embed``:
    texts -> ``[n, d]`` vectors (e.g. a loaded encoder's ``predictor.embed``), called once on the distinct
    anchors and positives and once on the distinct corpus sentences; ``chunk`` anchors are scored at a time."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if margin is not None and not margin >= 0:
        raise ValueError(f"margin must be ≥ 0, got {margin!r}")
    if max_similarity is not None and not -1 <= max_similarity <= 1:
        raise ValueError(f"max_similarity is a cosine in [-1, 1], got {max_similarity!r}")
    if not pairs:
        raise ValueError("no (anchor, positive) pairs to mine negatives for")
    texts = list(dict.fromkeys(corpus))
    if not texts:
        raise ValueError("the corpus holds no sentences")
    queries = list(dict.fromkeys(s for pair in pairs for s in pair))
    qv, cv = _normalised(embed(queries)), _normalised(embed(texts))
    if qv.shape[0] != len(queries) or cv.shape[0] != len(texts) or qv.shape[1] != cv.shape[1]:
        raise ValueError(f"embed returned {tuple(qv.shape)} and {tuple(cv.shape)} vectors for {len(queries)} and "
                         f"{len(texts)} texts")
    qpos = {s: i for i, s in enumerate(queries)}
    cpos = {s: i for i, s in enumerate(texts)}
    out = Mined([])
    for lo in range(0, len(pairs), chunk):
        part = pairs[lo:lo + chunk]
        a = qv[[qpos[x] for x, _ in part]]
        p = qv[[qpos[y] for _, y in part]]
        sims = a @ cv.T  # [chunk, corpus]
        excluded = torch.zeros_like(sims, dtype=torch.bool)
        for r, (x, y) in enumerate(part):
            for s in (x, y):
                if s in cpos:
                    excluded[r, cpos[s]] = True
        if margin is not None:
            excluded |= sims > ((a * p).sum(-1, keepdim=True) - margin)
        if max_similarity is not None:
            excluded |= sims > max_similarity
        sims = sims.masked_fill(excluded, float("-inf"))
        top = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        for r, (x, y) in enumerate(part):
            if k > sims.shape[1] or not torch.isfinite(top.values[r]).all():
                out.left_out.append(lo + r)
                continue
            out.triplets.append(Triplet(x, y, tuple(texts[j] for j in top.indices[r].tolist())))
    return out


__all__ = ["Mined", "mine_hard_negatives"]
