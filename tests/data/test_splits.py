"""Train / dev splits grouped by sentence (kexue.data.splits, kexue.data.pairs.sim_zh): on every real pair set of
shared/data/sim-zh no sentence is on both sides, the split is a function of the seed, and every pair of the file
(read here by an independent line parse) is in exactly one side or among the reported dropped ones. The graph's
components are checked against networkx; the fallback (a giant component cut by sentence) on a built graph."""
from __future__ import annotations

import random
from collections import Counter

import networkx as nx
import pytest

from kexue.data import shipped
from kexue.data.pairs import SIM_ZH_SETS, Pair, sim_zh, sim_zh_split
from kexue.data.splits import components, grouped_split, split_by_pair, split_report

ROOT = shipped.data_root() / "sim-zh"


def _file_pairs(name: str) -> list[tuple[str, str, float]]:
    """The file's pairs by a plain line parse (the generator of what a split must cover)."""
    rows = []
    for line in (ROOT / f"{name}.valid.data").read_text(encoding="utf-8").splitlines():
        if line.strip():
            a, b, y = line.split("\t")
            rows.append((a.strip(), b.strip(), float(y)))
    return rows


def _sentences(pairs) -> set[str]:
    return {s for p in pairs for s in (p.a, p.b)}


def _key(p: Pair) -> tuple[str, str, float]:
    return (p.a, p.b, float(p.score))


@pytest.mark.parametrize("name", SIM_ZH_SETS)
def test_grouped_split_of_each_real_set_shares_no_sentence_and_covers_every_pair(name):
    split = sim_zh_split(name, 0.2, 0)
    train, dev, report = split.train, split.dev, split.report
    assert not _sentences(train) & _sentences(dev)
    assert report.dev_sharing == 0 and report.overlap == 0.0
    rows = _file_pairs(name)
    assert report.dropped == 0 and report.method == "grouped"  # no giant component in these four sets
    assert Counter(map(_key, train)) + Counter(map(_key, dev)) == Counter(rows)
    assert abs(len(dev) - round(0.2 * len(rows))) <= max(1, round(0.05 * 0.2 * len(rows)))
    assert (report.n_train, report.n_dev) == (len(train), len(dev))
    assert report.components == nx.number_connected_components(nx.MultiGraph([(a, b) for a, b, _ in rows]))
    # the same seed, the same split; sim_zh gives its sides in the file's order
    assert sim_zh(name, "dev") == list(dev) and sim_zh(name, "train") == list(train)
    again = grouped_split([Pair(*r) for r in rows], 0.2, 0)
    assert again.train == train and again.dev == dev
    other = sim_zh_split(name, 0.2, 1)
    assert other.dev != dev and not _sentences(other.train) & _sentences(other.dev)


def test_the_pair_by_pair_cut_leaks_and_its_report_measures_it():
    rows = [Pair(*r) for r in _file_pairs("BQ")]
    split = split_by_pair(rows, 0.2, 0)
    seen = _sentences(split.train)
    leaking = sum(p.a in seen or p.b in seen for p in split.dev)
    assert split.report.dev_sharing == leaking and leaking / len(split.dev) > 0.9
    assert split_report(split.train, split.dev).dev_sharing == leaking


def test_components_equal_networkx_on_a_random_graph():
    rng = random.Random(0)
    pairs = [Pair(f"s{rng.randrange(300)}", f"s{rng.randrange(300)}", 1.0) for _ in range(250)]
    got = sorted(sorted({s for i in c for s in (pairs[i].a, pairs[i].b)}) for c in components(pairs))
    want = sorted(sorted(c) for c in nx.connected_components(nx.MultiGraph([(p.a, p.b) for p in pairs])))
    assert got == want
    assert sorted(i for c in components(pairs) for i in c) == list(range(len(pairs)))


def test_a_giant_component_is_cut_by_sentence_and_its_bridging_pairs_dropped():
    rng = random.Random(1)
    giant = [Pair(f"g{rng.randrange(120)}", f"g{rng.randrange(120)}", float(rng.randrange(2))) for _ in range(400)]
    small = [Pair(f"x{i}", f"y{i}", 1.0) for i in range(20)]
    pairs = giant + small
    assert max(map(len, components(pairs))) >= 390  # the random graph is (almost) one component
    split = grouped_split(pairs, 0.3, seed=0)
    r = split.report
    assert r.method == "grouped, cut" and r.cut >= 390 and r.dropped > 0
    assert not _sentences(split.train) & _sentences(split.dev)
    assert len(split.dev) >= round(0.3 * len(pairs))
    kept = Counter(split.train) + Counter(split.dev)
    assert sum(kept.values()) + r.dropped == len(pairs)
    dropped = list((Counter(pairs) - kept).elements())
    assert len(dropped) == r.dropped
    dev_side, train_side = _sentences(split.dev), _sentences(split.train)
    # a dropped pair bridges the sides: one sentence on the dev side, the other not
    assert all((p.a in dev_side) != (p.b in dev_side) for p in dropped)
    assert "fallback" in r.line() and f"pairs dropped: {r.dropped}" in r.line()
    assert grouped_split(pairs, 0.3, seed=0) == split
    assert not train_side & dev_side


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.2"])
def test_bad_dev_fraction_is_refused_by_name(fraction):
    pairs = [Pair(f"a{i}", f"b{i}", 1.0) for i in range(10)]
    with pytest.raises(ValueError, match="dev_fraction"):
        grouped_split(pairs, fraction)


def test_sim_zh_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown sim-zh set 'XNLI'"):
        sim_zh("XNLI", "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'dev'"):
        sim_zh("BQ", "test")
