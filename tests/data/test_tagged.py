"""NER files are read strictly: every tag sequence is a valid BIO (IOB2) or BIOES/BMES sequence, checked against
an independent oracle (a regular expression of the scheme's grammar) on every sequence of up to 4 tags; an
impossible transition is refused naming FILE:LINE and the transition, never guessed into spans."""
from __future__ import annotations

import itertools
import re

import pytest

from kexue.data import shipped
from kexue.data.files import DataError, check_tag_sequence, read_tagged

# the grammars, written as regular expressions over tags joined by spaces (each tag followed by one space)
_ENTITY = {"BIO": "(?:O |B-{k} (?:I-{k} )*)",
           "BIOES": "(?:O |S-{k} |B-{k} (?:[IM]-{k} )*E-{k} )"}


def oracle(tags: tuple[str, ...], scheme: str, kinds=("X", "Y")) -> bool:
    unit = "|".join(_ENTITY[scheme].format(k=k) for k in kinds)
    return re.fullmatch(f"(?:{unit})*", "".join(t + " " for t in tags)) is not None


@pytest.mark.parametrize("scheme, alphabet", [
    ("BIO", ["O", "B-X", "I-X", "B-Y", "I-Y"]),
    ("BIOES", ["O", "B-X", "I-X", "M-X", "E-X", "S-X", "B-Y", "E-Y"]),
])
def test_every_short_sequence_agrees_with_the_grammar(scheme, alphabet):
    n = 0
    for length in range(1, 5):
        for tags in itertools.product(alphabet, repeat=length):
            bad = check_tag_sequence(list(tags), scheme)
            assert (bad is None) == oracle(tags, scheme), (tags, bad)
            if bad is not None:  # the position named is one of the two tags of the bad transition
                assert 0 <= bad[0] < length and "bad transition" in bad[1]
            n += 1
    assert n == sum(len(alphabet) ** k for k in range(1, 5))


def write(tmp_path, text):
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, line, transition", [
    ("中 B-LOC\n国 I-LOC\n\n人 O\n民 I-PER\n", 5, "'O' -> 'I-PER'"),                          # BIO: I after O
    ("中 I-LOC\n国 I-LOC\n", 1, "the sentence start -> 'I-LOC'"),                            # BIO: I first
    ("中 B-LOC\n国 I-ORG\n", 2, "'B-LOC' -> 'I-ORG'"),                                       # BIO: type changes
    ("中 B-LOC\n国 E-LOC\n\n北 B-LOC\n京 O\n", 5, "'B-LOC' -> 'O'"),                          # BIOES: B not closed
    ("北 B-LOC\n京 I-LOC\n\n中 S-LOC\n", 2, "'I-LOC' -> the sentence end"),                   # BIOES: open at end
    ("北 B-LOC\n京 E-ORG\n", 2, "'B-LOC' -> 'E-ORG'"),                                       # BIOES: type changes
    ("北 S-LOC\n京 E-LOC\n", 2, "'S-LOC' -> 'E-LOC'"),                                       # BIOES: E after S
    ("北 B-LOC\n京 M-LOC\n市 B-LOC\n市 E-LOC\n", 3, "'M-LOC' -> 'B-LOC'"),                    # BMES: B inside
])
def test_bad_transitions_name_file_line_and_transition(tmp_path, text, line, transition):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as e:
        read_tagged(path)
    message = str(e.value)
    assert message.startswith(f"{path}:{line}: bad transition {transition}:"), message
    assert "\n" not in message


def test_valid_files_read_unchanged(tmp_path):
    path = write(tmp_path, "北 B-LOC\n京 M-LOC\n市 E-LOC\n的 O\n王 S-PER\n\n上 B-LOC\n海 E-LOC\n")
    assert read_tagged(path) == [(list("北京市的王"), ["B-LOC", "M-LOC", "E-LOC", "O", "S-PER"]),
                                 (list("上海"), ["B-LOC", "E-LOC"])]
    bio = write(tmp_path, "北 B-LOC\n京 I-LOC\n上 B-LOC\n海 I-LOC\n")  # adjacent entities of one type
    assert read_tagged(bio) == [(list("北京上海"), ["B-LOC", "I-LOC", "B-LOC", "I-LOC"])]


def test_the_scheme_is_the_files_and_named_in_the_message(tmp_path):
    """A file with any E-/S-/M- tag is BIOES throughout: a B- left open elsewhere is refused, naming the tag that
    made the file BIOES."""
    path = write(tmp_path, "中 B-LOC\n国 I-LOC\n\n人 S-PER\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: bad transition 'I-LOC' -> the sentence end") +
                       r".*\(the file uses E-/S-/M- tags, e.g. S-PER on line 4\)"):
        read_tagged(path)


def test_the_shipped_ner_data_is_valid_iob2():
    for split in ("dev", "test"):
        sents = shipped.ner_peoples_daily(split)
        assert sents and all(check_tag_sequence(tags, "BIO") is None for _, tags in sents)
