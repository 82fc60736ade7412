"""CUR search for cross-encoders: M ≈ C · U · R with U = pinv(R[:, anchors]).

《利用CUR分解加速交互式相似度模型的检索》 (on Yadav et al. 2022, "Efficient Nearest Neighbor Search for
Cross-Encoder Models using Matrix Factorization"). A cross-encoder has no item vectors, but the
score matrix M[query, item] is approximately low-rank. Offline, score a set of *anchor queries*
against every item: R = M[anchor queries, :]. Online, score the query only against a few
*anchor items* (c = M[q, anchor items], k_i calls), reconstruct every item's score as
ŝ = c · pinv(R[:, anchor items]) · R, then spend the remaining budget re-ranking the best ŝ with
the real cross-encoder. If rank(M) ≤ the anchor-query/anchor-item intersection's rank, ŝ is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

# score_fn(query_index_or_text, item_indices) -> [len(item_indices)] cross-encoder scores
ScoreFn = Callable[[Sequence[int]], Tensor]


@dataclass
class CUR:
    """Offline part: anchor-query scores ``R`` ``[k_q, N]`` and the chosen anchor item columns."""

    R: Tensor
    anchor_items: Tensor  # [k_i] item indices
    U: Tensor  # [k_i, k_q] = pinv(R[:, anchor_items])

    @classmethod
    def fit(cls, R: Tensor, anchor_items: Sequence[int] | Tensor, rcond: float = 1e-6) -> "CUR":
        R = torch.as_tensor(R).double()
        if R.ndim != 2:
            raise ValueError(f"R must be [anchor queries, items], got shape {tuple(R.shape)}")
        anchors = torch.as_tensor(anchor_items, dtype=torch.long).reshape(-1)
        if anchors.numel() == 0:
            raise ValueError("CUR needs at least one anchor item")
        if anchors.unique().numel() != anchors.numel():
            raise ValueError("CUR anchor items contain duplicates")
        if anchors.min() < 0 or anchors.max() >= R.shape[1]:
            raise ValueError(f"anchor items must index the {R.shape[1]} items")
        # rcond is relative to the largest singular value: drops directions the anchors barely span.
        U = torch.linalg.pinv(R[:, anchors], rtol=rcond)
        return cls(R, anchors, U)

    @property
    def num_items(self) -> int:
        return self.R.shape[1]

    def approximate(self, anchor_scores: Tensor) -> Tensor:
        """``[Q, k_i]`` query-vs-anchor-item scores -> ``[Q, N]`` approximate scores for every item."""
        c = torch.as_tensor(anchor_scores).double()
        c = c[None] if c.ndim == 1 else c
        if c.shape[1] != self.anchor_items.numel():
            raise ValueError(f"expected scores for {self.anchor_items.numel()} anchor items, got {c.shape[1]}")
        return (c @ self.U) @ self.R


def random_anchors(num_items: int, k: int, seed: int = 0) -> Tensor:
    """k distinct item indices drawn uniformly (the post's and the paper's baseline choice)."""
    if not 1 <= k <= num_items:
        raise ValueError(f"need 1 <= k <= {num_items} anchors, got {k}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_items, generator=g)[:k].sort().values


def cur_search(cur: CUR, score_fn: ScoreFn, k: int, budget: int) -> tuple[Tensor, int]:
    """Top-``k`` items for one query with at most ``budget`` cross-encoder calls.

    ``score_fn(items)`` scores the query against those item indices. The anchor items cost
    k_i calls; the rest of the budget re-ranks the best-reconstructed non-anchor items.
    Returns (top-k item indices by real cross-encoder score, calls made).
    """
    anchors = cur.anchor_items
    if budget < anchors.numel():
        raise ValueError(f"budget {budget} is below the {anchors.numel()} anchor-item calls")
    exact = torch.full((cur.num_items,), float("-inf"), dtype=torch.float64)
    exact[anchors] = torch.as_tensor(score_fn(anchors.tolist())).double()
    approx = cur.approximate(exact[anchors])[0]
    approx[anchors] = float("-inf")  # already scored for real
    m = min(budget - anchors.numel(), cur.num_items - anchors.numel())
    calls = anchors.numel()
    if m > 0:
        cand = approx.topk(m).indices
        exact[cand] = torch.as_tensor(score_fn(cand.tolist())).double()
        calls += m
    return exact.topk(min(k, cur.num_items)).indices, calls


def rerank_search(candidates: Tensor, score_fn: ScoreFn, k: int) -> Tensor:
    """Baseline: re-rank a retriever's candidate list with the cross-encoder (one call per candidate)."""
    cand = torch.as_tensor(candidates, dtype=torch.long)
    s = torch.as_tensor(score_fn(cand.tolist())).double()
    return cand[s.topk(min(k, cand.numel())).indices]


def recall_at_k(found: Sequence[int] | Tensor, truth: Sequence[int] | Tensor) -> float:
    """|found ∩ truth| / |truth|."""
    truth_set = set(torch.as_tensor(truth).tolist())
    return len(truth_set & set(torch.as_tensor(found).tolist())) / max(len(truth_set), 1)
