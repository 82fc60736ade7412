"""CPU-scale sample quality: Fréchet distance in a small digit classifier's features + class entropies.

FD = ||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^{1/2})   (the FID formula, with a classifier trained on the
real 8×8 digits instead of Inception).  Entropies of the classifier's predictions: the mean per-sample
entropy H(y|x) is low when samples look like *some* digit; the entropy of the mean prediction H(y) is
ln 10 ≈ 2.30 when all ten classes are produced evenly.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torch.nn import functional as F


class DigitClassifier(nn.Module):
    """Small CNN on 8×8 inputs (larger inputs are average-pooled down); ``features`` = 64-dim penultimate."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * 16, 64), nn.SiLU())
        self.head = nn.Linear(64, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 8:
            x = F.adaptive_avg_pool2d(x, 8)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int = 30, seed: int = 0) -> DigitClassifier:
    """Fit the feature network on real images (with ±1-pixel shifts as augmentation) through
    :func:`kexue.train.fit` (Adam 1e-3, batches of 64); returns it in eval mode."""
    from kexue.data.batching import index_batches
    from kexue.train.loop import fit

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = DigitClassifier(x.shape[1])

    drawn: dict[int, list] = {}  # one generator drawn epoch after epoch (fit may ask for an epoch twice)

    def epoch_batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        while epoch not in drawn:
            out = []
            for idx in index_batches(len(x), 64, generator=g):
                sh = torch.randint(-1, 2, (2,), generator=g).tolist()
                out.append((torch.roll(x[idx], shifts=sh, dims=(-2, -1)), y[idx]))
            drawn[len(drawn)] = out
        return drawn[epoch]

    fit(clf, lambda m, b: F.cross_entropy(m(b[0]), b[1]), epoch_batches,
        optimizer=torch.optim.Adam(clf.parameters(), 1e-3), epochs=epochs, progress=False, seed=seed)
    return clf.eval()


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the FID reference code does
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


@torch.no_grad()
def sample_quality(clf: DigitClassifier, samples: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """{'fd': Fréchet distance to ``real``, 'h_cond': mean H(y|x), 'h_marg': H(E_x p(y|x))}."""
    samples = samples.clamp(-1, 1)
    fd = frechet_distance(clf.features(samples).numpy(), clf.features(real).numpy())
    p = clf(samples).softmax(-1)
    h_cond = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
    pm = p.mean(0)
    h_marg = float(-(pm * pm.clamp_min(1e-12).log()).sum())
    return {"fd": fd, "h_cond": h_cond, "h_marg": h_marg}
