"""Unified diffusion (UDM) with a non-Gaussian corruption: blurring + noise, trained by x₀-prediction.

生成扩散模型漫谈（十一）/（十二）：统一扩散模型（理论篇 / 应用篇）.  The forward process may be any
x_t = α_t 𝒯_t(x_0) + β_t ε with a degradation 𝒯_t; here 𝒯_t is heat dissipation (Gaussian blur of width
σ_b(t) = σ_max·t, applied exactly in the 2-D DCT basis as exp(-σ_b²ω²/2) per frequency), α_t = cos(πt/2),
β_t = sin(πt/2).  Train x̂_0 = f_θ(x_t, t) with ||x̂_0 - x_0||², then sample (DDIM-like, from the post):
    ε̂ = (x_t - α_t 𝒯_t(x̂_0)) / β_t,   x_s = α_s 𝒯_s(x̂_0) + sqrt(β_s² - σ²) ε̂ + σ z
with σ = η·β_s·sqrt(1 - (α_t β_s / (α_s β_t))²) (η = 0: deterministic).

The application post's other degradations, same α_t, β_t, loss and sampler (any object with
``alpha_beta(t)`` and ``degrade(x0, t)`` is a process):
  - :class:`MaskNoise` (masking / inpainting): 𝒯_t(x) = m_t ⊙ x, pixel p erased (set to 0, mid-grey)
    once t passes its fixed erase time u_p (a seeded permutation), so masks are nested and a
    fraction t of the pixels is gone at time t;
  - :class:`DownsampleNoise` (resolution): 𝒯_t(x) interpolates between the image average-pooled to
    consecutive resolutions S, S/2, ..., 1 (each shown nearest-upsampled to S), one octave per
    1/log2(S) of time, so t = 1 leaves only the image mean.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (D @ x transforms a length-n signal; D.T inverts)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Heat-equation blur of width ``sigma`` (pixels, shape (B,)) with reflecting borders, via the DCT."""
    h, w = x.shape[-2:]
    dh, dw = dct_matrix(h).to(x), dct_matrix(w).to(x)
    freq = dh @ x @ dw.T
    wh = (math.pi * torch.arange(h, device=x.device) / h) ** 2
    ww = (math.pi * torch.arange(w, device=x.device) / w) ** 2
    damp = torch.exp(-(wh[:, None] + ww[None]) * sigma.view(-1, 1, 1, 1) ** 2 / 2)
    return dh.T @ (freq * damp) @ dw


class BlurNoise:
    """The corruption x_t = α_t·blur(x_0, σ_max·t) + β_t·ε of the UDM post's blur example."""

    def __init__(self, sigma_max: float = 4.0):
        self.sigma_max = sigma_max

    @staticmethod
    def alpha_beta(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)

    def degrade(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return blur(x0, self.sigma_max * t)

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a, b = (v.view(-1, 1, 1, 1) for v in self.alpha_beta(t))
        return a * self.degrade(x0, t) + b * noise


class MaskNoise(BlurNoise):
    """x_t = α_t·(m_t ⊙ x_0) + β_t·ε with nested random masks m_t (a fraction t of pixels erased)."""

    def __init__(self, size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        # erase times (k + 1/2)/P in a random pixel order: pixel erased once t > its time
        order = torch.randperm(size * size, generator=g).double()
        self.erase_time = ((order + 0.5) / (size * size)).view(size, size)

    def mask(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) float mask: 1 where the pixel is still visible at time t."""
        return (self.erase_time.to(t.device)[None, None] >= t.double().view(-1, 1, 1, 1)).to(t.dtype)

    def degrade(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x0.shape[-1] != self.erase_time.shape[-1] or x0.shape[-2] != self.erase_time.shape[-2]:
            raise ValueError(f"MaskNoise built for {tuple(self.erase_time.shape)} images, got {tuple(x0.shape[-2:])}")
        return x0 * self.mask(t).to(x0.dtype)


def pooled(x: torch.Tensor, level: int) -> torch.Tensor:
    """x average-pooled by 2**level and nearest-upsampled back to its size."""
    if level == 0:
        return x
    k = 2 ** level
    return torch.nn.functional.avg_pool2d(x, k).repeat_interleave(k, -2).repeat_interleave(k, -1)


class DownsampleNoise(BlurNoise):
    """x_t = α_t·𝒯_t(x_0) + β_t·ε, 𝒯_t sliding from full resolution (t = 0) to the mean (t = 1)."""

    def __init__(self, size: int):
        levels = round(math.log2(size))
        if size < 2 or 2 ** levels != size:
            raise ValueError(f"DownsampleNoise needs a power-of-two image size, got {size}")
        self.size, self.levels = size, levels

    def degrade(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x0.shape[-1] != self.size or x0.shape[-2] != self.size:
            raise ValueError(f"DownsampleNoise built for {self.size}x{self.size} images, got {tuple(x0.shape[-2:])}")
        pos = (t * self.levels).clamp(0, self.levels)
        low = pos.floor().clamp(max=self.levels - 1)
        frac = (pos - low).view(-1, 1, 1, 1)
        out = torch.empty_like(x0)
        for level in low.unique().tolist():  # one (level, level + 1) pair per group of samples
            idx = (low == level).nonzero().squeeze(1)
            a, b = pooled(x0[idx], int(level)), pooled(x0[idx], int(level) + 1)
            out[idx] = a + frac[idx] * (b - a)
        return out


def udm_loss(model, x0: torch.Tensor, process: BlurNoise) -> torch.Tensor:
    """x₀-prediction: ||f_θ(x_t, t) - x_0||² with t ~ U(0, 1)."""
    t = torch.rand(x0.shape[0], device=x0.device)
    return (model(process.corrupt(x0, t, torch.randn_like(x0)), t) - x0).pow(2).mean()


@torch.no_grad()
def sample_udm(model, x: torch.Tensor, steps: int, process: BlurNoise, eta: float = 0.0,
               progress: bool = False) -> torch.Tensor:
    """Generalised DDIM sampling for x_t = α_t 𝒯_t(x_0) + β_t ε from x ~ N(0, I) at t = 1; NFE = steps."""
    ts = torch.linspace(1, 0, steps + 1, device=x.device)
    b = x.shape[0]
    for i in tqdm(range(steps), disable=not progress, desc="udm", leave=False):
        t, s = ts[i].expand(b), ts[i + 1].expand(b)
        x0 = model(x, t)
        a_t, b_t = (v.view(-1, 1, 1, 1) for v in process.alpha_beta(t))
        a_s, b_s = (v.view(-1, 1, 1, 1) for v in process.alpha_beta(s))
        eps = (x - a_t * process.degrade(x0, t)) / b_t
        sigma = eta * b_s * (1 - (a_t * b_s / (a_s * b_t).clamp_min(1e-12)) ** 2).clamp_min(0).sqrt()
        x = a_s * process.degrade(x0, s) + (b_s ** 2 - sigma ** 2).clamp_min(0).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn_like(x)
    return x
