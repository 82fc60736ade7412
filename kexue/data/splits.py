"""Train / dev splits of one file of sentence pairs that share no sentence, and the report of what a split shares.

A pair set such as LCQMC or BQ reuses sentences: one question is paired with many others. Cut at random
pair by pair, most dev pairs then hold a sentence the model was trained on (BQ: 96.8 % of a seeded 80/20
cut), and the dev score measures memory of sentences rather than generalisation: models that scored
LCQMC 71.0 / BQ 62.2 on such a dev split scored 50.2 / 53.8 on the sets' official test splits.

:func:`grouped_split` groups instead. The pairs are the edges of a graph whose nodes are the sentences
(exact strings); its connected components (union-find over sentence1 / sentence2) are assigned whole, so no
sentence is on both sides:

1. the components are shuffled with ``random.Random(seed)``;
2. walking them in that order, a component goes to dev while dev stays within ``round(n · dev_fraction)``
   pairs (the target), else to train (a greedy fill: with many small components it reaches the target);
3. **fallback** when components too large keep dev short of the target by more than ``tolerance`` of it
   (one giant component holding most pairs): the largest component left in train is cut by sentence: its
   sentences join dev in breadth-first order from a seeded start until the pairs with both sentences on the
   dev side make up the target; pairs with both sentences left stay in train, and the pairs that bridge
   the two sides are *dropped* (counted in the report, never silently).

On the four sets of ``shared/data/sim-zh`` no fallback is needed (largest components: ATEC 10, BQ 674,
LCQMC 7, PAWSX 19 pairs), so every pair is kept and the dev split shares no sentence with train.

:func:`split_report` measures any split (the given ``--train`` / ``--dev`` files of a recipe included):
the share of dev pairs with a sentence (either side) also seen in train, and the pairs dropped.
:func:`split_by_pair` is the leaky pair-by-pair cut, kept to measure what it shares.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

P = TypeVar("P")  # a pair: anything with ``.a`` and ``.b`` sentences (kexue.data.pairs.Pair), or see ``sides``
Sides = Callable[[object], tuple]


def pair_sides(p) -> tuple[str, str]:
    """The two sentences of a pair: ``(p.a, p.b)``."""
    return p.a, p.b


@dataclass(frozen=True)
class SplitReport:
    """What a train / dev split of sentence pairs shares.

    ``method``: ``"grouped"`` (whole components), ``"grouped, cut"`` (the fallback cut a component and dropped
    its bridging pairs), ``"by pair"`` (a random cut of pairs) or ``"given"`` (two files); ``dev_sharing``:
    dev pairs with a sentence that a train pair also has; ``dropped``: pairs in neither split;
    ``components`` / ``largest``: the sentence graph's number of components and pairs in the largest
    (grouped splits); ``cut``: pairs of the component the fallback cut (0 when none was)."""

    method: str
    n_train: int
    n_dev: int
    dev_sharing: int
    dropped: int = 0
    dev_fraction: float | None = None
    seed: int | None = None
    components: int | None = None
    largest: int | None = None
    cut: int = 0

    @property
    def n_pairs(self) -> int:
        return self.n_train + self.n_dev + self.dropped

    @property
    def overlap(self) -> float:
        """Share of dev pairs with a sentence seen in train."""
        return self.dev_sharing / self.n_dev if self.n_dev else 0.0

    def line(self, name: str = "split") -> str:
        """One printable line: sizes, overlap, dropped pairs, how it was made."""
        how = self.method
        if self.dev_fraction is not None:
            how += f", dev fraction {self.dev_fraction:g}, seed {self.seed}"
        if self.components is not None:
            how += f"; {self.components} sentence components, the largest {self.largest} pairs"
        if self.cut:
            how += f"; fallback: a component of {self.cut} pairs cut by sentence"
        line = (f"{name}: {self.n_train} train / {self.n_dev} dev pairs ({how}); dev pairs sharing a sentence with "
                f"train: {self.dev_sharing} ({100 * self.overlap:.1f} %)")
        return line if self.method == "given" else line + f"; pairs dropped: {self.dropped}"

    def as_dict(self) -> dict:
        return {"method": self.method, "n_train": self.n_train, "n_dev": self.n_dev, "dropped": self.dropped,
                "dev_sharing": self.dev_sharing, "overlap": round(self.overlap, 4),
                "dev_fraction": self.dev_fraction, "seed": self.seed, "components": self.components,
                "largest_component": self.largest, "cut_component": self.cut}


@dataclass(frozen=True)
class PairSplit:
    """The two sides of a split (each in the source file's order) and its :class:`SplitReport`."""

    train: tuple
    dev: tuple
    report: SplitReport


def sharing(train: Sequence[P], dev: Sequence[P], sides: Sides = pair_sides) -> int:
    """Number of ``dev`` pairs with a sentence (either side) that some ``train`` pair also has (``sides(p)``:
    a pair's two sentences)."""
    seen = {s for p in train for s in sides(p)}
    return sum(any(s in seen for s in sides(p)) for p in dev)


def split_report(train: Sequence[P], dev: Sequence[P], method: str = "given", sides: Sides = pair_sides,
                 **fields) -> SplitReport:
    """The :class:`SplitReport` of a split (``fields``: ``dropped``, ``dev_fraction``, ``seed`` ...)."""
    return SplitReport(method, len(train), len(dev), sharing(train, dev, sides), **fields)


def components(pairs: Sequence[P], sides: Sides = pair_sides) -> list[list[int]]:
    """The pair indices of each connected component of the sentence graph (union-find over a pair's two
    sentences), components in order of their first pair, indices ascending."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        a, b = sides(p)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(find(sides(p)[0]), []).append(i)
    return list(groups.values())


def _check(pairs: Sequence, dev_fraction: float) -> int:
    if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, (int, float)) or not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be a number strictly between 0 and 1, got {dev_fraction!r}")
    target = int(round(len(pairs) * dev_fraction))
    if not 1 <= target <= len(pairs) - 1:
        raise ValueError(f"dev_fraction {dev_fraction:g} of {len(pairs)} pairs leaves one side empty")
    return target


def _cut(pairs: Sequence[P], comp: list[int], need: int, rng: random.Random,
         sides: Sides = pair_sides) -> tuple[list[int], list[int], list[int]]:
    """(to dev, kept in train, dropped) pair indices of component ``comp``: its sentences join the dev side in
    breadth-first order from a random start until ``need`` pairs have both sentences there."""
    adjacent: dict[str, list[tuple[str, int]]] = {}
    ends = {i: sides(pairs[i]) for i in comp}
    for i, (a, b) in ends.items():
        adjacent.setdefault(a, []).append((b, i))
        adjacent.setdefault(b, []).append((a, i))
    start = sorted(adjacent)[rng.randrange(len(adjacent))]
    side: set[str] = set()
    queue, queued = deque([start]), {start}
    inside: set[int] = set()
    while queue and len(inside) < need:
        s = queue.popleft()
        side.add(s)
        for t, i in adjacent[s]:
            if t in side:
                inside.add(i)  # a self-pair (a == b) lands here too
            elif t not in queued:
                queued.add(t)
                queue.append(t)
    dev = sorted(inside)
    side = {s for i in dev for s in ends[i]}  # a reached sentence without a dev pair stays free
    train = [i for i in comp if not any(s in side for s in ends[i])]
    dropped = [i for i in comp if i not in inside and any(s in side for s in ends[i])]
    return dev, train, dropped


def grouped_split(pairs: Sequence[P], dev_fraction: float = 0.2, seed: int = 0, tolerance: float = 0.05,
                  sides: Sides = pair_sides) -> PairSplit:
    """Train / dev pairs that share no sentence: whole components of the sentence graph, seeded, dev aiming at
    ``dev_fraction`` of the pairs; when that misses the target by more than ``tolerance`` of it, the fallback
    cuts a component by sentence and drops its bridging pairs (module docstring). ``sides(p)``: the two
    sentences of pair ``p`` (default ``(p.a, p.b)``)."""
    target = _check(pairs, dev_fraction)
    comps = components(pairs, sides)
    rng = random.Random(seed)
    order = list(range(len(comps)))
    rng.shuffle(order)
    dev: list[int] = []
    train_comps: list[list[int]] = []
    for c in order:
        if len(dev) + len(comps[c]) <= target:
            dev += comps[c]
        else:
            train_comps.append(comps[c])
    dropped: list[int] = []
    cut = 0
    if target - len(dev) > max(1, round(tolerance * target)):
        giant = max(train_comps, key=len)
        to_dev, _, dropped = _cut(pairs, giant, target - len(dev), rng, sides)
        dev += to_dev
        cut = len(giant)
    left = set(dev) | set(dropped)
    train = [i for i in range(len(pairs)) if i not in left]
    dev_pairs, train_pairs = [pairs[i] for i in sorted(dev)], [pairs[i] for i in train]
    report = split_report(train_pairs, dev_pairs, "grouped, cut" if cut else "grouped", sides, dropped=len(dropped),
                          dev_fraction=dev_fraction, seed=seed, components=len(comps),
                          largest=max(map(len, comps)), cut=cut)
    return PairSplit(tuple(train_pairs), tuple(dev_pairs), report)


def split_by_pair(pairs: Sequence[P], dev_fraction: float = 0.2, seed: int = 0, sides: Sides = pair_sides) -> PairSplit:
    """The pair-by-pair cut (a seeded shuffle of the pairs, the first ``round(n · dev_fraction)`` to dev): it
    leaks sentences into dev, which its report measures. Kept for that measurement; use :func:`grouped_split`."""
    target = _check(pairs, dev_fraction)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    dev = sorted(order[:target])
    chosen = set(dev)
    train_pairs = [pairs[i] for i in range(len(pairs)) if i not in chosen]
    dev_pairs = [pairs[i] for i in dev]
    report = split_report(train_pairs, dev_pairs, "by pair", sides, dev_fraction=dev_fraction, seed=seed)
    return PairSplit(tuple(train_pairs), tuple(dev_pairs), report)


__all__ = ["PairSplit", "SplitReport", "components", "grouped_split", "pair_sides", "sharing", "split_by_pair",
           "split_report"]
