"""Contrastive data files (kexue.data.triplets): triplet TSV, labelled pairs as positives, sentence files;
each malformed line refused as ``file:line: ...``."""
from __future__ import annotations

import pytest

from kexue.data.paths import data_root
from kexue.data.pairs import read_pairs
from kexue.data.triplets import (Triplet, TripletFileError, file_layout, read_sentences, read_triplets,
                                 write_triplets)


def test_triplet_file_round_trip(tmp_path):
    rows = [Triplet("a1", "p1", ("n1", "m1")), Triplet("a2", "p2", ("n2", "m2"))]
    f = tmp_path / "t.tsv"
    write_triplets(rows, f)
    assert f.read_text(encoding="utf-8") == "a1\tp1\tn1\tm1\na2\tp2\tn2\tm2\n"
    assert file_layout(f) == "triplets"
    assert read_triplets(f) == rows
    assert read_sentences(f) == ["a1", "p1", "n1", "m1", "a2", "p2", "n2", "m2"]


def test_pair_file_gives_its_label_1_pairs():
    path = data_root() / "sim-zh" / "PAWSX.valid.data"
    pairs = read_pairs(path)
    triplets = read_triplets(path)
    assert file_layout(path) == "pairs"
    assert triplets == [Triplet(p.a, p.b) for p in pairs if p.score == 1]
    assert 0 < len(triplets) < len(pairs)
    texts = read_sentences(path)
    assert texts == list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))


def test_graded_scores_need_a_threshold():
    path = data_root() / "sts-b-zh" / "valid.tsv"
    with pytest.raises(TripletFileError, match=r"valid.tsv: labels other than 0/1 .*--positive-min"):
        read_triplets(path)
    pairs = read_pairs(path)
    assert read_triplets(path, min_score=4) == [Triplet(p.a, p.b) for p in pairs if p.score >= 4]
    with pytest.raises(TripletFileError, match="no pair scores ≥ 9"):
        read_triplets(path, min_score=9)


@pytest.mark.parametrize("text,message", [
    ("a\tb\tc\nd\te\n", r"t.tsv:2: 0 negatives, but line 1 has 1"),
    ("a\tb\n\nc\t\n", r"t.tsv:3: the positive is empty"),
    ("a\tb\tc\n \tb\ty\n", r"t.tsv:2: the anchor is empty"),
    ("a\tb\nc\n", r"t.tsv:2: expected anchor<TAB>positive"),
    ("\n\n", r"t.tsv: empty file"),
])
def test_malformed_triplets(tmp_path, text, message):
    f = tmp_path / "t.tsv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(TripletFileError, match=message):
        read_triplets(f)


def test_sentence_file(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("今天天气很好\n\n 今天天气很好 \n明天下雨\n", encoding="utf-8")
    assert file_layout(f) == "sentences"
    assert read_sentences(f) == ["今天天气很好", "明天下雨"]
    f.write_text("一句\n两\t句\n", encoding="utf-8")
    with pytest.raises(TripletFileError, match=r"s.txt:2: a TAB"):
        read_sentences(f)
    with pytest.raises(TripletFileError, match="no such file"):
        read_sentences(tmp_path / "missing.txt")


def test_write_refuses_tabs(tmp_path):
    with pytest.raises(ValueError, match="TAB or a line break"):
        write_triplets([Triplet("a\tb", "c")], tmp_path / "x.tsv")
