"""n random points in a disc lying in one sector of central angle θ, for every θ in [0, 2π].

From the post 《圆内随机n点在同一个圆心角为θ的扇形的概率》 (kexue.fm, 2022-10-25).

The problem is about angles only: a point uniform in the unit disc has density ``r dr dφ / π`` in polar
coordinates, which factorises, so its angle φ is uniform on the circle whatever its radius. Measure angles
in turns, ``x = θ / 2π``. The n angles cut the circle into n arcs (gaps) ``G_1 .. G_n`` (turns, summing to
1), and the gap vector is uniform on the simplex ``{G_i ≥ 0, Σ G_i = 1}``. All points fit in one sector of
angle θ iff the complement of some gap is at most x, i.e. iff the largest gap is at least ``a = 1 − x``.
For any j gaps, ``P(each of them ≥ a) = (1 − j·a)_+^(n−1)`` (take a off each: what is left is the simplex
scaled by ``1 − j·a``, of volume ∝ ``(1 − j·a)^(n−1)``). Inclusion–exclusion over the gaps gives, for all
θ in [0, 2π]::

    P_n(θ) = Σ_{j=1}^{min(n, ⌊1/a⌋)} (−1)^(j−1) C(n, j) (1 − j·a)^(n−1),      a = 1 − θ/2π

* θ ≤ π (a ≥ 1/2): only j = 1 is left, ``P_n(θ) = n (θ/2π)^(n−1)``; the semicircle gives ``n / 2^(n−1)``.
* π < θ ≤ 4π/3: ``n x^(n−1) − C(n,2) (2x − 1)^(n−1)``; each further ``2π·(1 − 1/j)`` adds a term.
* θ = 2π (a = 0): ``Σ_j (−1)^(j−1) C(n,j) = 1``. For n = 2: ``min(θ/π, 1)``.

The alternating sum cancels badly for large n near 2π, so it is summed in exact rational arithmetic
(:func:`sector_probability_exact`) and rounded once. :func:`sector_monte_carlo` is the independent check: it
samples points uniform in the disc (rejection from the square), takes their angles with ``atan2`` and
measures the smallest sector holding them (``2π − largest gap``).
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction

import torch

TWO_PI = 2 * math.pi


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: the number of points must be an integer >= 1, got {n!r}")
    return int(n)


def sector_probability_exact(n: int, turns: Fraction | int) -> Fraction:
    """``P_n`` for a sector of ``turns`` = θ/2π of a full turn (a rational in [0, 1]), as an exact fraction."""
    n = _check_n(n)
    x = Fraction(turns)
    if not 0 <= x <= 1:
        raise ValueError(f"turns: the sector's share of the full angle must lie in [0, 1], got {x}")
    a = 1 - x
    total = Fraction(0)
    for j in range(1, n + 1):
        rest = 1 - j * a
        if rest < 0:
            break
        total += (-1) ** (j - 1) * math.comb(n, j) * rest ** (n - 1)
    return total


def sector_probability(n: int, theta: float) -> float:
    """Probability that n points uniform in a disc lie in one sector of central angle ``theta`` (radians,
    0 ≤ θ ≤ 2π): ``Σ_j (−1)^(j−1) C(n,j) (1 − j(1 − θ/2π))_+^(n−1)``, summed exactly (see the module)."""
    theta = float(theta)
    if not 0.0 <= theta <= TWO_PI or math.isnan(theta):
        raise ValueError(f"theta: the central angle must lie in [0, 2π], got {theta!r}")
    return float(sector_probability_exact(n, Fraction(min(theta / TWO_PI, 1.0))))


def sample_disc(count: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """``[count, 2]`` points uniform (in area) in the unit disc, by rejection from the square [−1, 1]²: the
    points that fall outside are drawn again until every one is inside."""
    x, y = (torch.rand(count, generator=generator, dtype=dtype).mul_(2).sub_(1) for _ in range(2))
    redo = (x * x + y * y >= 1).nonzero().squeeze(1)
    while len(redo):
        nx, ny = (torch.rand(len(redo), generator=generator, dtype=dtype).mul_(2).sub_(1) for _ in range(2))
        x[redo], y[redo] = nx, ny
        redo = redo[nx * nx + ny * ny >= 1]
    return torch.stack((x, y), -1)


def smallest_sector(points: torch.Tensor) -> torch.Tensor:
    """``[..., n, 2]`` points -> ``[...]`` central angle (radians, float64) of the smallest sector (about the
    origin) that holds them all: 2π minus the largest angular gap between circular neighbours."""
    if points.dim() < 2 or points.shape[-1] != 2:
        raise ValueError(f"points: expected [..., n, 2], got shape {tuple(points.shape)}")
    x, y = (points[..., i].to(torch.float64).contiguous() for i in (0, 1))  # contiguous: atan2 is ~50x faster
    phi = torch.atan2(y, x).sort(-1).values
    gaps = phi.diff(dim=-1)
    wrap = TWO_PI - (phi[..., -1] - phi[..., 0])
    largest = torch.maximum(gaps.amax(-1), wrap) if gaps.shape[-1] else wrap
    return TWO_PI - largest


def sector_monte_carlo(n: int, thetas, samples: int = 10**7, chunk: int = 10**6,
                       seed: int = 0) -> tuple[torch.Tensor, int]:
    """Monte Carlo of :func:`sector_probability` on a grid of angles: ``samples`` draws of n disc points
    (``chunk`` draws at a time), returning the hit counts per θ (int64) and the number of draws."""
    n = _check_n(n)
    thetas = torch.as_tensor(thetas, dtype=torch.float64).reshape(-1)
    if samples < 1 or chunk < 1:
        raise ValueError(f"samples and chunk must be >= 1, got {samples}, {chunk}")
    g = torch.Generator().manual_seed(seed)
    hits = torch.zeros(len(thetas), dtype=torch.int64)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        arc = smallest_sector(sample_disc(m * n, g).reshape(m, n, 2))
        hits += (arc[:, None] <= thetas[None, :]).sum(0)
        done += m
    return hits, samples
