"""T5 PEGASUS tokenizer: jieba words in the vocab stay whole, the rest falls back to characters, and
decode(encode(x)) == x (modulo spaces) on Chinese text from ../shared/seeds."""
import re
from pathlib import Path

import pytest

from kexue.data.shipped import chinese_text
from kexue.models.t5_pegasus import t5_pegasus_tokenizer, word_char_vocab
from kexue.text.tokenizer import jieba_words
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)

SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def seed_lines():
    lines = []
    for f in sorted((SEEDS).glob("*.txt")):
        lines += [ln for ln in f.read_text(encoding="utf-8").splitlines() if re.search("[\u4e00-\u9fff]{8}", ln)]
    return lines[:60]


@pytest.fixture(scope="module")
def tokenizer(seed_lines):
    # Words from the shared corpus and the seeds; characters of both (the real vocab covers all common chars).
    return t5_pegasus_tokenizer(word_char_vocab(chinese_text(400) + seed_lines))


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s).replace("\ufffd", "")  # BERT's text cleaning drops U+FFFD


def test_round_trip_seed_text(tokenizer, seed_lines):
    assert len(seed_lines) >= 20
    for line in seed_lines:
        ids, _ = tokenizer.encode(line)
        assert tokenizer.unk_id not in ids
        assert squash(tokenizer.decode(ids)) == squash(line)


def test_in_vocab_words_stay_whole(tokenizer, seed_lines):
    whole = fallback = 0
    for line in seed_lines[:20]:
        tokens = tokenizer.tokenize(line)
        for w in jieba_words(line):
            if len(w) > 1 and w in tokenizer.vocab:
                assert w in tokens
                whole += 1
        fallback += sum(1 for w in jieba_words(line) if len(w) > 1 and re.fullmatch("[\u4e00-\u9fff]+", w)
                        and w not in tokenizer.vocab)
    assert whole > 50 and fallback > 0
    # An out-of-vocabulary word splits into its characters.
    oov = next(w for ln in seed_lines for w in jieba_words(ln)
               if len(w) > 1 and re.fullmatch("[\u4e00-\u9fff]+", w) and w not in tokenizer.vocab)
    assert tokenizer.tokenize(oov) == list(oov)
