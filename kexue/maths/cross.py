"""Colourings of the "cross" (five unit squares, 16 unit segments) with every row of dominant colours distinct.

From the post 《“十字架”组合计数问题浅试》 (kexue.fm, 2022-10-09). A square is *i-dominant* when two of its
four sides have colour i and the other two have two different other colours. Colour each of the cross's 16
segments with one of k colours (the post: k = 3, red / yellow / blue) so that the three squares of the
horizontal bar, and the three of the vertical bar, are dominant in three different colours (so every square
is dominant in some colour). The post quotes two published answers, 54,432 and 27,216, and shows by
enumeration that 27,216 is the number of such colourings (54,432 is exactly twice it).

Counting from the Centre square, as the post does. The Centre has dominant colour c and its four sides are
shared with the Left, Right, Top and Bottom squares. An arm square whose shared side has colour s has
``k^3`` colourings of its three own sides; of those, the number that make it d-dominant is::

    f(s, d) = p = 3(k−1)(k−2)   if s = d   (the second d and two different other colours on three sides)
              q = 3(k−2)        if s ≠ d   (the second d and a third colour ≠ s, d)

Arms are independent once the Centre is fixed, so a bar (say Left/Right with shared colours ``s_L, s_R``)
contributes ``H = Σ_{d_L ≠ d_R, both ≠ c} f(s_L, d_L) f(s_R, d_R)``, which depends only on whether each
shared side carries c:

    both c:                  H_cc = (k−1)(k−2) q²                                  = 9 (k−1)(k−2)³
    one c, one x ≠ c:        H_cx = q [(k−2) p + (k−2)² q]                         = 9 (2k−3)(k−2)³
    x, y ≠ c (x ≠ y):        H_xy = p² + 2(k−3) p q + ((k−1)(k−2) − 2k + 5) q²    = 9 (4k−7)(k−2)³

The Centre's two c sides are both on one bar (2 ways, the other bar then gets an ordered pair of distinct
non-c colours: (k−1)(k−2) ways) or one on each bar (4 ways, times (k−1)(k−2)), so, over k choices of c::

    N(k) = k (k−1)(k−2) [2 H_cc H_xy + 4 H_cx²] = 162 k (k−1) (k−2)^7 (3k−5) (4k−5)

N(3) = 27,216 (k = 3: H_cc = 18, H_cx = 27, H_xy = 45, N = 6 · (2·18·45 + 4·27²)); N(2) = 0 (two colours
cannot make a square dominant). :func:`count_by_enumeration` is the post's programme: enumerate the ``k^4``
Centre colourings and, for each shared colour, the ``k^3`` arm colourings, then combine the arm tables;
:func:`count_brute_force` checks every one of the ``k^16`` colourings of the 16 segments (k ≤ 3).
"""
from __future__ import annotations

import itertools
import numbers

import numpy as np

PUBLISHED = {"Wang Huixing": 27216, "Wu Kang": 54432}  # the two answers the post quotes (k = 3)


def _segments_and_squares() -> tuple[int, dict[str, tuple[int, int, int, int]]]:
    """The cross's unit segments, numbered, and each square's four sides (left, right, bottom, top) as
    segment numbers, from the squares' lower-left corners on the integer grid."""
    corners = {"centre": (1, 1), "left": (0, 1), "right": (2, 1), "bottom": (1, 0), "top": (1, 2)}
    ids: dict[tuple, int] = {}
    squares = {}
    for name, (x, y) in corners.items():
        sides = (((x, y), (x, y + 1)), ((x + 1, y), (x + 1, y + 1)), ((x, y), (x + 1, y)), ((x, y + 1), (x + 1, y + 1)))
        squares[name] = tuple(ids.setdefault(s, len(ids)) for s in sides)
    return len(ids), squares


SEGMENTS, SQUARES = _segments_and_squares()  # 16 segments; SQUARES["centre"] = (left, right, bottom, top)
BARS = (("left", "centre", "right"), ("bottom", "centre", "top"))


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: the number of colours must be an integer >= 1, got {k!r}")
    return int(k)


def dominant(sides: np.ndarray, k: int) -> np.ndarray:
    """``[..., 4]`` side colours in ``0..k-1`` -> ``[...]`` the square's dominant colour, or −1 when it has
    none (dominant = one colour on exactly two sides and two different colours on the other two)."""
    sides = np.asarray(sides)
    counts = np.stack([(sides == c).sum(-1) for c in range(k)], -1)
    ok = (counts.max(-1) == 2) & ((counts > 0).sum(-1) == 3)
    return np.where(ok, counts.argmax(-1), -1)


def count_formula(k: int) -> int:
    """``N(k) = 162 k (k−1) (k−2)^7 (3k−5)(4k−5)`` valid colourings with k colours (module docstring)."""
    k = _check_k(k)
    return 162 * k * (k - 1) * (k - 2) ** 7 * (3 * k - 5) * (4 * k - 5)


def count_by_enumeration(k: int) -> int:
    """The post's reduction of the search: enumerate the Centre's ``k^4`` colourings; tabulate, by shared
    colour s and dominant colour d, how many of an arm's ``k^3`` own-side colourings make it d-dominant; sum
    the products of the four arm tables over the dominant colours allowed by the two bars."""
    k = _check_k(k)
    grid = np.array(list(itertools.product(range(k), repeat=4)))            # [k^4, 4]
    centre_dom = dominant(grid, k)
    # the arm table arm[s, d]: a 4-tuple read as (shared side, three own sides); dominance ignores side order
    arm = np.zeros((k, k), dtype=np.int64)
    has = centre_dom >= 0
    np.add.at(arm, (grid[has, 0], centre_dom[has]), 1)
    left, right, bottom, top = (grid[:, i] for i in range(4))              # the Centre's sides
    d = np.arange(k)
    total = 0
    for c in range(k):
        pick = centre_dom == c
        allowed = ((d[:, None] != d[None, :]) & (d[:, None] != c) & (d[None, :] != c)).astype(np.int64)
        bar = [np.einsum("ni,nj,ij->n", arm[a[pick]], arm[b[pick]], allowed) for a, b in ((left, right), (bottom, top))]
        total += int((bar[0] * bar[1]).sum())
    return total


def count_brute_force(k: int) -> int:
    """Every one of the ``k^16`` colourings of the 16 segments, checked square by square through a table of
    the ``k^4`` side colourings' dominant colours (k ≤ 3: 43M colourings, as the ``k^4`` colourings of the
    Centre's sides times the ``k^12`` of the other twelve segments, the latter vectorised)."""
    k = _check_k(k)
    if k > 3:
        raise ValueError(f"k: brute force over k^16 colourings is for k <= 3, got {k}")
    table = dominant(np.array(list(itertools.product(range(k), repeat=4)))[:, ::-1], k)  # code Σ c_i k^i -> dom
    centre = SQUARES["centre"]
    others = [s for s in range(SEGMENTS) if s not in centre]
    rest = np.array(list(itertools.product(range(k), repeat=len(others))), dtype=np.int64)  # [k^12, 12]
    # each arm square's code from its own (non-Centre) sides, then the shared side's weight k^i
    own, shared = {}, {}
    for name, sides in SQUARES.items():
        if name != "centre":
            own[name] = sum(rest[:, others.index(s)] * k ** i for i, s in enumerate(sides) if s not in centre)
            shared[name] = next((centre.index(s), k ** i) for i, s in enumerate(sides) if s in centre)
    total = 0
    for fixed in itertools.product(range(k), repeat=4):
        c = table[sum(f * k ** i for i, f in enumerate(fixed))]
        if c < 0:  # the Centre is not dominant: none of these k^12 colourings counts
            continue
        dom = {name: table[own[name] + fixed[j] * w] for name, (j, w) in shared.items()}
        dom["centre"] = np.full(len(rest), c)
        ok = np.ones(len(rest), dtype=bool)
        for a, b, c3 in BARS:
            ok &= (dom[a] >= 0) & (dom[b] >= 0) & (dom[c3] >= 0)
            ok &= (dom[a] != dom[b]) & (dom[b] != dom[c3]) & (dom[a] != dom[c3])
        total += int(ok.sum())
    return total
