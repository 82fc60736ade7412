"""《“十字架”组合计数问题浅试》: the brute force over every colouring, the post's Centre-first enumeration and
the closed form agree with each other and with the published 27,216; the k-colour generalisation."""
import itertools
from collections import Counter

import numpy as np
import pytest
import sympy as sp

from kexue.maths.cross import (BARS, PUBLISHED, SEGMENTS, SQUARES, count_brute_force, count_by_enumeration,
                               count_formula, dominant)


def test_the_cross_has_16_segments_and_5_squares():
    assert SEGMENTS == 16 and len(SQUARES) == 5
    uses = Counter(s for sides in SQUARES.values() for s in sides)
    assert sorted(uses) == list(range(16))
    assert {s for s, u in uses.items() if u == 2} == set(SQUARES["centre"])  # the Centre shares each side once
    for name, sides in SQUARES.items():
        if name != "centre":
            assert len(set(sides) & set(SQUARES["centre"])) == 1
    assert {frozenset(b) for b in BARS} == {frozenset({"left", "centre", "right"}), frozenset({"bottom", "centre", "top"})}


def _dominant_by_definition(sides, k):
    """i-dominant: i on exactly two sides, the other two sides two different colours other than i."""
    for i in range(k):
        rest = [c for c in sides if c != i]
        if len(rest) == 2 and rest[0] != rest[1]:
            return i
    return -1


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_dominant_follows_the_definition(k):
    grid = list(itertools.product(range(k), repeat=4))
    assert dominant(np.array(grid).reshape(-1, 4), k).tolist() == [_dominant_by_definition(g, k) for g in grid]
    assert dominant([0, 0, 1, 2], 3) == 0 and dominant([1, 0, 1, 1], 3) == -1 and dominant([0, 1, 0, 1], 3) == -1


def test_published_count_k3_three_ways():
    brute = count_brute_force(3)  # all 3^16 = 43,046,721 colourings
    assert brute == count_by_enumeration(3) == count_formula(3) == 27216 == PUBLISHED["Wang Huixing"]
    assert PUBLISHED["Wu Kang"] == 2 * brute  # the other published answer is exactly twice the count


@pytest.mark.parametrize("k", [1, 2])
def test_too_few_colours_give_nothing(k):
    assert count_brute_force(k) == count_by_enumeration(k) == count_formula(k) == 0


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7, 8])
def test_generalisation_enumeration_equals_formula(k):
    assert count_by_enumeration(k) == count_formula(k)


def test_closed_form_algebra():
    """The docstring's bar sums and their product expand to 162 k (k-1) (k-2)^7 (3k-5) (4k-5)."""
    k = sp.symbols("k")
    p, q = 3 * (k - 1) * (k - 2), 3 * (k - 2)
    h_cc = (k - 1) * (k - 2) * q**2
    h_cx = q * ((k - 2) * p + (k - 2) ** 2 * q)
    h_xy = p**2 + 2 * (k - 3) * p * q + ((k - 1) * (k - 2) - 2 * k + 5) * q**2
    assert sp.expand(h_cc - 9 * (k - 1) * (k - 2) ** 3) == 0
    assert sp.expand(h_cx - 9 * (2 * k - 3) * (k - 2) ** 3) == 0
    assert sp.expand(h_xy - 9 * (4 * k - 7) * (k - 2) ** 3) == 0
    total = k * (k - 1) * (k - 2) * (2 * h_cc * h_xy + 4 * h_cx**2)
    assert sp.expand(total - 162 * k * (k - 1) * (k - 2) ** 7 * (3 * k - 5) * (4 * k - 5)) == 0
    assert all(total.subs(k, v) == count_formula(v) for v in range(1, 10))


def test_arm_table_matches_p_and_q():
    """Of an arm's k^3 own-side colourings, 3(k-1)(k-2) make it d-dominant when the shared side is d and 3(k-2)
    when it is not: counted directly here."""
    for k in (3, 4, 5):
        for s in range(k):
            own = np.array(list(itertools.product(range(k), repeat=3)))
            dom = dominant(np.concatenate([np.full((len(own), 1), s), own], 1), k)
            for d in range(k):
                assert (dom == d).sum() == (3 * (k - 1) * (k - 2) if d == s else 3 * (k - 2))


def test_bad_input():
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="k: "):
            count_formula(bad)
        with pytest.raises(ValueError, match="k: "):
            count_by_enumeration(bad)
    with pytest.raises(ValueError, match="k <= 3"):
        count_brute_force(4)
