"""BERT-whitening with hyper-parameters: x̃ = (x − β·μ) · U · Λ^(−γ/2), first k columns kept.

《你可能不需要BERT-flow：一个线性变换媲美BERT-flow》 and 《当BERT-whitening引入超参数：总有一款适合你》.
μ is the corpus mean and Σ_β = (1/N) Σᵢ (xᵢ − β·μ)ᵀ(xᵢ − β·μ) = U Λ Uᵀ (SVD): the second post centres
the covariance with the same β as the vectors, so Σ_β = Σ + (1 − β)² μᵀμ. β = γ = 1 is classic whitening
(zero mean, identity covariance); β = γ = 0 is a pure rotation (cosines unchanged; its first k columns are
PCA without centring), so the pair interpolates between "trust the encoder" and "fully isotropic".
Columns come sorted by eigenvalue, so keeping the first k is PCA-style dimensionality reduction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from kexue.io import save_safetensors


@dataclass
class Whitening:
    """A fitted transform; ``transform(x)`` applies it, ``save``/``load`` persist it."""

    mu: Tensor  # [d]
    U: Tensor  # [d, d], eigenvectors of the centred covariance Σ (β = 1), eigenvalues descending
    eigenvalues: Tensor  # [d]
    beta: float = 1.0
    gamma: float = 1.0
    k: int | None = None
    n: int | None = None  # vectors fitted on (Σ uses N − 1; Σ_β adds N/(N − 1)·(1 − β)² μᵀμ to match)

    @classmethod
    def fit(cls, vectors: Tensor, beta: float = 1.0, gamma: float = 1.0, k: int | None = None) -> "Whitening":
        """Fit μ, U, Λ on ``[N, d]`` vectors (in float64; the covariance uses N − 1 like ``np.cov``)."""
        if vectors.ndim != 2 or vectors.shape[0] < 2:
            raise ValueError(f"whitening needs [N >= 2, d] vectors, got shape {tuple(vectors.shape)}")
        x = vectors.double()
        mu = x.mean(0)
        cov = torch.cov(x.T)
        # Σ is symmetric PSD, so its SVD is its eigendecomposition with values already descending.
        U, s, _ = torch.linalg.svd(cov)
        out = cls(mu, U, s, beta, gamma, None, x.shape[0])
        return out.with_params(beta, gamma, k)

    def with_params(self, beta: float | None = None, gamma: float | None = None, k: int | None = None) -> "Whitening":
        """The same fitted statistics with other (β, γ, k): a grid search needs one fit only."""
        d = self.mu.numel()
        k = self.k if k is None else k
        if k is not None and not 1 <= k <= d:
            raise ValueError(f"k must be in [1, {d}], got {k}")
        return Whitening(self.mu, self.U, self.eigenvalues, self.beta if beta is None else beta,
                         self.gamma if gamma is None else gamma, k, self.n)

    @cached_property
    def basis(self) -> tuple[Tensor, Tensor]:
        """(U_β, Λ_β), the SVD of Σ_β = Σ + N/(N − 1)·(1 − β)² μᵀμ (equal to the fitted U, Λ at β = 1)."""
        if self.beta == 1:
            return self.U, self.eigenvalues
        scale = 1.0 if self.n is None else self.n / (self.n - 1)
        cov = (self.U * self.eigenvalues) @ self.U.T + scale * (1 - self.beta) ** 2 * torch.outer(self.mu, self.mu)
        U, s, _ = torch.linalg.svd(cov)
        return U, s

    @property
    def matrix(self) -> Tensor:
        """``[d, k]`` = U_β Λ_β^(−γ/2), first k columns (float64)."""
        k = self.k or self.mu.numel()
        U, s = self.basis
        return U[:, :k] * s[:k].clamp(min=1e-12) ** (-self.gamma / 2)

    def transform(self, x: Tensor) -> Tensor:
        """``[N, d]`` -> ``[N, k]`` in the dtype of ``x``."""
        if x.shape[-1] != self.mu.numel():
            raise ValueError(f"whitening was fitted on dim {self.mu.numel()}, got vectors of dim {x.shape[-1]}")
        return ((x.double() - self.beta * self.mu) @ self.matrix).to(x.dtype)

    __call__ = transform

    def save(self, path: str | Path) -> None:
        """One safetensors file; (β, γ, k) go in its metadata."""
        meta = {"kexue": "whitening",
                "params": json.dumps({"beta": self.beta, "gamma": self.gamma, "k": self.k, "n": self.n})}
        tensors = {"mu": self.mu.contiguous(), "U": self.U.contiguous(), "eigenvalues": self.eigenvalues.contiguous()}
        save_safetensors(tensors, path, metadata=meta)  # atomic: a crash never leaves half a file

    @classmethod
    def from_folder(cls, directory: str | Path) -> "Whitening":
        """The whitening an encoder folder records as its post-processing
        (:func:`kexue.recipes.folder.save_encoder`), after checking the folder against its manifest."""
        from kexue.io import FolderError, check_folder

        manifest = check_folder(directory, required=True)
        step = manifest["post_processing"].get("whitening")
        if step is None:
            raise FolderError(f"{Path(directory) / 'manifest.json'}: field 'post_processing.whitening' is missing "
                              "(this folder records no whitening)")
        w = cls.load(Path(directory) / step["file"])
        for key in ("beta", "gamma", "k"):
            if step.get(key) != getattr(w, key):
                raise FolderError(f"{Path(directory) / 'manifest.json'}: field 'post_processing.whitening.{key}' is "
                                  f"{step.get(key)!r} but {step['file']} holds {getattr(w, key)!r}")
        return w

    @classmethod
    def load(cls, path: str | Path) -> "Whitening":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("kexue") != "whitening":
            raise ValueError(f"{path} is not a kexue whitening file")
        t = load_file(str(path))
        p = json.loads(meta["params"])
        return cls(t["mu"], t["U"], t["eigenvalues"], p["beta"], p["gamma"], p["k"], p.get("n"))
