"""《圆内随机n点在同一个圆心角为θ的扇形的概率》: the closed form against exact special cases, an independent
integral (conditioning on the largest gap, by scipy) and a Monte Carlo of points uniform in the disc."""
import math
from fractions import Fraction

import pytest
import torch
from scipy.integrate import quad

from kexue.maths.sector import (sample_disc, sector_monte_carlo, sector_probability, sector_probability_exact,
                                smallest_sector)

PI = math.pi
GRID = (PI / 3, PI / 2, PI, 1.2 * PI, 4 * PI / 3, 1.5 * PI, 5 * PI / 3, 1.9 * PI)


def largest_gap_at_least(m: int, b: float) -> float:
    """P(the largest of m uniform spacings of the circle, in turns, is >= b), by conditioning on which gap
    is the largest: the gaps are Dirichlet(1, ..., 1), a gap's marginal density is (m-1)(1-g)^(m-2), and given
    G_1 = g the others are (1-g) x Dirichlet of m-1, all below g iff their largest is below g / (1-g).
    Nothing here uses inclusion-exclusion."""
    if b > 1:
        return 0.0
    if m == 1:
        return 1.0

    def integrand(g):  # from g = 1/2 on the others are below g / (1 - g) >= 1 surely
        return (1 - g) ** (m - 2) * (1.0 if g >= 0.5 else 1.0 - largest_gap_at_least(m - 1, g / (1 - g)))

    kinks = [1 / (j + 1) for j in range(1, m + 1) if b < 1 / (j + 1) < 1]
    value, err = quad(integrand, b, 1, points=kinks or None, epsabs=1e-12, epsrel=1e-12, limit=200)
    return m * (m - 1) * value


def test_semicircle_is_n_over_2_to_the_n_minus_1_exactly():
    for n in range(1, 41):
        assert sector_probability_exact(n, Fraction(1, 2)) == Fraction(n, 2 ** (n - 1))
        assert sector_probability(n, PI) == n / 2 ** (n - 1)


def test_up_to_a_half_turn_one_term():
    for n in (1, 2, 3, 5, 8, 13):
        for theta in (0.0, 0.1, 1.0, 2.0, 3.0, PI):
            assert sector_probability(n, theta) == pytest.approx(n * (theta / (2 * PI)) ** (n - 1), rel=1e-13, abs=0)
    assert sector_probability_exact(3, Fraction(1, 4)) == Fraction(3, 16)


def test_full_turn_and_pigeonhole_give_one():
    # the n gaps sum to a turn, so the largest is >= 1/n: n points always fit in 2π(1 - 1/n)
    for n in range(1, 30):
        assert sector_probability(n, 2 * PI) == 1.0
        assert sector_probability_exact(n, Fraction(n - 1, n)) == 1
        assert sector_probability(n, 2 * PI * (1 - 1 / n) + 1e-9) == 1.0
    for n in range(3, 12):  # ... and not less
        assert sector_probability_exact(n, Fraction(n - 1, n) - Fraction(1, 10**6)) < 1


def test_two_points():
    # the shorter arc between two uniform angles is uniform on [0, π]
    for theta in (0.0, 0.3, 1.5, PI - 1e-9, PI, 3.5, 5.0, 2 * PI):
        assert sector_probability(2, theta) == pytest.approx(min(theta / PI, 1.0), rel=1e-14, abs=1e-15)


def test_continuous_and_increasing_in_theta():
    for n in (3, 4, 6, 10):
        thetas = torch.linspace(0, 2 * PI, 2001, dtype=torch.float64).tolist()
        ps = [sector_probability(n, t) for t in thetas]
        assert all(b >= a for a, b in zip(ps, ps[1:]))
        assert max(b - a for a, b in zip(ps, ps[1:])) < 10 * n / 2000  # no jump (density <= n(n-1)/2π)
        for j in range(2, n + 1):  # where a new inclusion-exclusion term starts
            t = 2 * PI * (1 - 1 / j)
            assert sector_probability(n, t - 1e-9) == pytest.approx(sector_probability(n, t + 1e-9), abs=1e-7)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_against_the_largest_gap_integral(n):
    # below the pigeonhole angle 2π(1 - 1/n), where every term of the sum can matter
    for theta in [t for t in GRID + (0.7 * PI, 1.1 * PI, 1.45 * PI, 1.6 * PI, 1.7 * PI) if t < 2 * PI * (1 - 1 / n)]:
        expected = largest_gap_at_least(n, 1 - theta / (2 * PI))
        assert sector_probability(n, theta) == pytest.approx(expected, abs=1e-9)


def test_no_cancellation_for_many_points():
    for n in (60, 100, 200):
        ps = [sector_probability(n, t) for t in (1.9 * PI, 1.95 * PI, 1.97 * PI, 1.99 * PI)]
        assert all(0 <= p <= 1 for p in ps) and ps == sorted(ps)
    for n in (60, 100):  # at 2π(1 - 1/n) the answer is exactly 1; the alternating sum in floats misses it
        a = 1 / n
        naive = sum((-1) ** (j - 1) * math.comb(n, j) * max(1 - j * a, 0) ** (n - 1) for j in range(1, n + 1))
        assert abs(naive - 1) > 1e-9
        assert sector_probability(n, 2 * PI * (1 - a)) == 1.0
    assert sector_probability(200, 2 * PI * 0.97) == pytest.approx(float(sector_probability_exact(200, Fraction(97, 100))),
                                                                   rel=1e-12)


def test_smallest_sector():
    pts = lambda *angles: torch.tensor([[math.cos(a) * 0.5, math.sin(a) * 0.5] for a in angles])
    assert smallest_sector(pts(0.0, PI / 2)).item() == pytest.approx(PI / 2, abs=1e-12)
    assert smallest_sector(pts(0.0, PI / 2, PI, 3 * PI / 2)).item() == pytest.approx(1.5 * PI, abs=1e-6)
    assert smallest_sector(pts(3.0, -3.0)).item() == pytest.approx(2 * PI - 6.0, abs=1e-6)  # across ±π
    assert smallest_sector(pts(1.0)).item() == 0.0
    with pytest.raises(ValueError, match="points"):
        smallest_sector(torch.zeros(5, 3))


def test_sample_disc_is_uniform_in_area():
    xy = sample_disc(10**6, torch.Generator().manual_seed(1))
    r2 = (xy * xy).sum(-1).double()
    assert xy.shape == (10**6, 2) and bool((r2 < 1).all())
    # r² ~ U(0, 1) for a uniform disc: mean 1/2, sd 1/√12; the angle's cosine has mean 0, sd 1/√2
    assert abs(r2.mean().item() - 0.5) < 3 / math.sqrt(12 * 10**6)
    cos = xy[:, 0].double() / r2.sqrt()
    assert abs(cos.mean().item()) < 3 / math.sqrt(2 * 10**6)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_monte_carlo_in_the_disc_agrees(n):
    """10^7 draws of n points uniform in the disc per n, every θ of the grid within 3 standard errors."""
    hits, draws = sector_monte_carlo(n, GRID, samples=10**7, chunk=10**6, seed=0)
    for h, theta in zip(hits.tolist(), GRID):
        p = sector_probability(n, theta)
        if p in (0.0, 1.0):  # n = 2 from a half turn on, n = 8 at 1.9π: every draw must fit
            assert h == p * draws, (n, theta)
        else:
            se = math.sqrt(p * (1 - p) / draws)
            assert abs(h / draws - p) <= 3 * se, (n, theta, h / draws, p, se)


def test_bad_input():
    for bad_n in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="n: "):
            sector_probability(bad_n, 1.0)
    for bad_theta in (-0.1, 2 * PI + 1e-6, float("nan")):
        with pytest.raises(ValueError, match="theta"):
            sector_probability(3, bad_theta)
    with pytest.raises(ValueError, match="turns"):
        sector_probability_exact(3, Fraction(3, 2))
