"""Batches of item indices: the one batch maker every kexue training loop and batched inference uses.

* :func:`index_batches` — ``[0, n)`` cut into consecutive batches of ``batch_size``, after a shuffle.
* :func:`length_batches` — items of similar length share a batch (less padding): shuffled, the order is
  sorted by length within windows of ``window`` batches, cut, and the batches shuffled again (randomness
  across windows, similar lengths within a batch); unshuffled, the items are sorted by length and cut
  into buckets of increasing length (batched inference), whose outputs :func:`restore_order` puts back.
* :class:`RandomBatches` — batches drawn with replacement (a fixed number per epoch).

Reproducible either way :func:`kexue.train.fit` resumes a run: ``seed=`` shuffles with ``random.Random(seed)``
(a loop passes e.g. ``seed + epoch`` and gets the same batches for the same epoch number), while without a
seed the permutation is ``torch.randperm`` on ``generator`` or on torch's global RNG (whose state ``fit``
saves at every epoch's start and restores to rebuild that epoch). Batches smaller than ``min_size`` are
dropped (only the last one can be: ``min_size=batch_size`` keeps full batches only); a last batch smaller than
``merge_under`` joins the batch before it instead (every item still seen once per epoch, no update on a
remainder of one or two items; :func:`count_batches` counts the batches either way).
"""
from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def _check(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _shuffler(shuffle: bool, seed: int | None, generator: torch.Generator | None) -> Callable[[list], list]:
    """A function returning a shuffled copy of a list, drawing from the RNG the arguments name."""
    if not shuffle:
        if seed is not None or generator is not None:
            raise ValueError("seed / generator given with shuffle=False: nothing would be drawn from them")
        return list
    if seed is not None and generator is not None:
        raise ValueError("give seed (Python's random.Random) or generator (torch), not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        rng = random.Random(seed)

        def python_shuffle(xs: list) -> list:
            xs = list(xs)
            rng.shuffle(xs)
            return xs

        return python_shuffle

    def torch_shuffle(xs: list) -> list:
        xs = list(xs)
        return [xs[i] for i in torch.randperm(len(xs), generator=generator).tolist()]

    return torch_shuffle


def _cut(order: list[int], batch_size: int, min_size: int, merge_under: int = 0) -> list[list[int]]:
    out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) < merge_under:
        last = out.pop()
        out[-1] = out[-1] + last
    return out if not out or len(out[-1]) >= min_size else out[:-1]


def _check_sizes(batch_size: int, min_size: int, merge_under: int) -> None:
    _check("batch_size", batch_size)
    _check("min_size", min_size)
    _check("merge_under", merge_under, 0)
    if min_size > batch_size:
        raise ValueError(f"min_size {min_size} > batch_size {batch_size}: every batch would be dropped")
    if merge_under > batch_size:
        raise ValueError(f"merge_under {merge_under} > batch_size {batch_size}: a full batch would be merged")


def count_batches(n: int, batch_size: int, min_size: int = 1, merge_under: int = 0) -> int:
    """How many batches :func:`index_batches` / :func:`length_batches` make of ``n`` items with these sizes."""
    _check("n", n, 0)
    _check_sizes(batch_size, min_size, merge_under)
    return len(_cut(list(range(n)), batch_size, min_size, merge_under))


def index_batches(n: int, batch_size: int, seed: int | None = None, *, shuffle: bool = True,
                  generator: torch.Generator | None = None, min_size: int = 1,
                  merge_under: int = 0) -> list[list[int]]:
    """``[0, n)`` in batches of ``batch_size`` (the last may be smaller; under ``merge_under`` items it joins
    the one before), shuffled first unless ``shuffle=False``: with ``random.Random(seed)``, else
    ``torch.randperm`` on ``generator`` (default: torch's global RNG)."""
    _check("n", n, 0)
    _check_sizes(batch_size, min_size, merge_under)
    order = _shuffler(shuffle, seed, generator)(range(n))
    return _cut(order, batch_size, min_size, merge_under)


def length_batches(lengths: Sequence[int], batch_size: int, seed: int | None = None, *, shuffle: bool = True,
                   generator: torch.Generator | None = None, window: int | None = None,
                   min_size: int = 1, merge_under: int = 0) -> list[list[int]]:
    """Batches of indices into ``lengths`` whose items have similar lengths (a last cut batch under
    ``merge_under`` items joins the one before it, as in :func:`index_batches`).

    Shuffled (the default): shuffle, sort by length within windows of ``window`` (default 50) batches, cut
    into batches, shuffle the batches (the same RNG, as :func:`index_batches` picks it). ``shuffle=False``:
    every index sorted by length (stable) and cut: buckets of non-decreasing length, for batched inference;
    :func:`restore_order` puts the outputs back in input order."""
    lengths = list(lengths)
    _check_sizes(batch_size, min_size, merge_under)
    if window is not None and not shuffle:
        raise ValueError("window sorts within windows of a shuffled order; unshuffled batches sort everything")
    window = _check("window", 50 if window is None else window)
    shuffled = _shuffler(shuffle, seed, generator)
    order = shuffled(range(len(lengths)))
    if not shuffle:
        return _cut(sorted(order, key=lambda i: lengths[i]), batch_size, min_size, merge_under)
    span = batch_size * window
    order = [j for s in range(0, len(order), span) for j in sorted(order[s:s + span], key=lambda i: lengths[i])]
    chunks = _cut(order, batch_size, 1, merge_under)
    return [b for b in shuffled(chunks) if len(b) >= min_size]


def restore_order(values: Sequence[T] | Tensor, batches: Sequence[Sequence[int]]) -> list[T] | Tensor:
    """Outputs computed batch after batch (``values``: a list, or a tensor whose rows follow the batches,
    concatenated) put back in the order of the input items: row ``k`` of the result is the output of
    item ``k``. The batches must hold each of ``0 … n-1`` exactly once."""
    order = [i for b in batches for i in b]
    if len(values) != len(order):
        raise ValueError(f"restore_order: {len(values)} outputs for {len(order)} batched items")
    if sorted(order) != list(range(len(order))):
        raise ValueError("restore_order: the batches do not hold each item index 0 … n-1 exactly once")
    if isinstance(values, Tensor):
        out = torch.empty_like(values)
        out[torch.tensor(order, dtype=torch.long, device=values.device)] = values
        return out
    restored: list = [None] * len(order)
    for i, v in zip(order, values):
        restored[i] = v
    return restored


class RandomBatches:
    """``n`` batches of ``batch_size`` rows of ``dataset`` drawn with replacement from torch's global RNG
    (so :func:`kexue.train.fit` replays them exactly on resume)."""

    def __init__(self, dataset: Tensor, batch_size: int, n: int):
        self.dataset, self.batch_size, self.n = dataset, _check("batch_size", batch_size), _check("n", n, 0)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.dataset[torch.randint(0, len(self.dataset), (self.batch_size,))]


__all__ = ["RandomBatches", "count_batches", "index_batches", "length_batches", "restore_order"]
