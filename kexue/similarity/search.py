"""Vector search behind one interface: exact search in torch, or faiss (optional) for large corpora.

Scores are inner products; with ``normalize=True`` (the default) vectors are L2-normalised on the
way in, so the inner product is the cosine similarity used by SimBERT / CoSENT vectors.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class VectorIndex(Protocol):
    def add(self, vectors: Tensor) -> None: ...
    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]: ...
    def __len__(self) -> int: ...


def _prepare(vectors: Tensor, dim: int | None, normalize: bool) -> Tensor:
    """Shape-check, cast to fp32 and (optionally) L2-normalise rows."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [N, d], got shape {tuple(vectors.shape)}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"index holds dim {dim}, got vectors of dim {vectors.shape[1]}")
    v = vectors.float()
    return F.normalize(v, dim=-1) if normalize else v


def _top(k: int, size: int) -> int:
    k = min(k, size)
    if k < 1:
        raise ValueError("search needs k >= 1 and a non-empty index")
    return k


class TorchIndex:
    """Exact inner-product search: one matmul + top-k per chunk of queries (bounds memory)."""

    def __init__(self, dim: int | None = None, normalize: bool = True, chunk: int = 1024):
        self.dim, self.normalize, self.chunk = dim, normalize, chunk
        self.vectors = torch.empty(0, dim or 0)

    def add(self, vectors: Tensor) -> None:
        v = _prepare(vectors, self.dim, self.normalize)
        self.dim = v.shape[1]
        self.vectors = v if len(self) == 0 else torch.cat([self.vectors, v])

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """``([Q, k] scores, [Q, k] indices)``, best first."""
        q = _prepare(queries, self.dim, self.normalize)
        k = _top(k, len(self))
        scores, idx = [], []
        for start in range(0, q.shape[0], self.chunk):
            top = (q[start:start + self.chunk] @ self.vectors.T).topk(k, dim=1)
            scores.append(top.values)
            idx.append(top.indices)
        return torch.cat(scores), torch.cat(idx)


class FaissIndex:
    """faiss ``IndexFlatIP`` (exact) by default; pass any faiss index via ``index`` for ANN."""

    def __init__(self, dim: int, normalize: bool = True, index=None):
        try:
            import faiss
        except ImportError as e:  # optional extra
            raise ImportError("FaissIndex needs faiss: pip install 'kexue[faiss]'") from e
        self.dim, self.normalize = dim, normalize
        self.index = index if index is not None else faiss.IndexFlatIP(dim)

    def add(self, vectors: Tensor) -> None:
        self.index.add(_prepare(vectors, self.dim, self.normalize).contiguous().numpy())

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        q = _prepare(queries, self.dim, self.normalize)
        D, I = self.index.search(q.contiguous().numpy(), _top(k, len(self)))
        return torch.from_numpy(D), torch.from_numpy(I).long()


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(vectors: Tensor, backend: str = "auto", normalize: bool = True,
                faiss_threshold: int = 100_000) -> VectorIndex:
    """An index holding ``vectors``: ``torch`` (exact), ``faiss``, or ``auto`` (faiss above the threshold)."""
    if backend == "auto":
        backend = "faiss" if vectors.shape[0] >= faiss_threshold and faiss_available() else "torch"
    if backend == "torch":
        index: VectorIndex = TorchIndex(vectors.shape[1], normalize)
    elif backend == "faiss":
        index = FaissIndex(vectors.shape[1], normalize)
    else:
        raise ValueError(f"unknown search backend {backend!r}: auto, torch or faiss")
    index.add(vectors)
    return index
