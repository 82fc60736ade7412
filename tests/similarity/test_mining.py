"""Hard-negative mining (kexue.similarity.mining, `kexue mine`) against a brute-force numpy search over real
sentences (sim-zh LCQMC, STS-B-zh) with the shipped zh-mini encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest

import kexue
from kexue.data.paths import data_root
from kexue.data.pairs import read_pairs
from kexue.data.triplets import Triplet, read_triplets
from kexue.models.pretrained import zh_mini_path
from kexue.similarity.mining import mine_hard_negatives


@pytest.fixture(scope="module")
def encoder():
    return kexue.load(zh_mini_path())


def _brute(vec: dict, pairs, corpus, k, margin=None, max_similarity=None):
    """One pair at a time: every corpus sentence scored in float64, filtered, sorted."""
    out, left = [], []
    for i, (a, p) in enumerate(pairs):
        va, vp = vec[a], vec[p]
        pos = float(va @ vp)
        cands = []
        for c in dict.fromkeys(corpus):
            s = float(va @ vec[c])
            if c in (a, p) or (margin is not None and s > pos - margin) or \
                    (max_similarity is not None and s > max_similarity):
                continue
            cands.append((-s, c))
        cands.sort()
        if len(cands) < k:
            left.append(i)
        else:
            out.append(Triplet(a, p, tuple(c for _, c in cands[:k])))
    return out, left


@pytest.mark.parametrize("k,margin,max_similarity", [(1, None, None), (3, 0.05, None), (2, None, 0.8)])
def test_mining_equals_brute_force(encoder, k, margin, max_similarity):
    pairs = [(t.anchor, t.positive) for t in read_triplets(data_root() / "sim-zh" / "LCQMC.valid.data")[:40]]
    corpus = [s for q in read_pairs(data_root() / "sts-b-zh" / "valid.tsv")[:150] for s in (q.a, q.b)]
    corpus += [p for _, p in pairs[:10]] + [pairs[0][0]]  # the pairs' own sentences must be excluded
    texts = list(dict.fromkeys([s for pair in pairs for s in pair] + corpus))
    vectors = encoder.embed(texts).double().numpy()
    vec = {t: v / np.linalg.norm(v) for t, v in zip(texts, vectors)}
    mined = mine_hard_negatives(encoder.embed, pairs, corpus, k, margin, max_similarity, chunk=16)
    expect, left = _brute(vec, pairs, corpus, k, margin, max_similarity)
    assert mined.triplets == expect and mined.left_out == left
    assert all(t.anchor not in t.negatives and t.positive not in t.negatives for t in mined.triplets)


def test_too_few_candidates_are_left_out(encoder):
    pairs = [("今天天气很好", "今天天气不错"), ("我想买一部手机", "哪里可以买手机")]
    mined = mine_hard_negatives(encoder.embed, pairs, ["今天天气很好", "明天会下雨吗"], k=1)
    assert mined.left_out == [] and mined.triplets[0].negatives == ("明天会下雨吗",)  # its own anchor excluded
    mined = mine_hard_negatives(encoder.embed, pairs, ["今天天气很好", "明天会下雨吗"], k=2)
    assert mined.left_out == [0] and len(mined.triplets) == 1
    assert sorted(mined.triplets[0].negatives) == sorted(["今天天气很好", "明天会下雨吗"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        mine_hard_negatives(encoder.embed, pairs, ["x"], k=0)


def test_mine_command_feeds_infonce(tmp_path, capsys):
    from kexue.cli import main as cli

    lines = (data_root() / "sim-zh" / "BQ.valid.data").read_text(encoding="utf-8").splitlines()[:80]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "triplets.tsv"
    capsys.readouterr()
    assert cli(["mine", "zh-mini", "--pairs", str(pairs), "--out", str(out), "--k", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    triplets = read_triplets(out)
    assert summary["triplets"] == len(triplets) == sum(ln.endswith("\t1") for ln in lines)
    assert all(len(t.negatives) == 2 for t in triplets)
    assert cli(["similarity", "--loss", "infonce", "--train", str(out), "--checkpoint", "zh-mini", "--steps", "1",
                "--batch-size", "8", "--out", str(tmp_path / "enc"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "enc" / "metrics.json").read_text())["hard_negatives"] == 2
    assert cli(["mine", "zh-mini", "--pairs", str(pairs), "--out", str(out), "--max-similarity", "2"]) == 2
    assert "--max-similarity is a cosine in [-1, 1]" in capsys.readouterr().err
