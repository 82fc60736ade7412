"""kexue's Tokenizer against transformers.BertTokenizer on real mixed-script text."""
import pytest
from transformers import BertTokenizer

from kexue.data import shipped as datasets
from kexue.models.pretrained import minilm_path
from kexue.text.tokenizer import Tokenizer, build_vocab


@pytest.fixture(scope="module")
def pair():
    path = minilm_path()
    return Tokenizer.from_pretrained(path), BertTokenizer(str(path / "vocab.txt"), do_lower_case=True)


def _real_texts(shared):
    texts = [p.a for p in datasets.sts_en("test")[:60]] + [p.a for p in datasets.sts_zh("test")[:60]]
    texts += datasets.fortunes("chinese")[:40]
    for seed in sorted((shared / "seeds").glob("*.txt")):
        texts += [line for line in seed.read_text(encoding="utf-8").splitlines() if line.strip()][:15]
    texts += ["Emoji 😀👍 mixed 中文 and English, café NAÏVE — “quotes” (brackets) 123.45%"]
    return texts


def test_ids_equal_bert_tokenizer(pair, shared_dir):
    ours, theirs = pair
    texts = _real_texts(shared_dir)
    assert len(texts) > 200
    for t in texts:
        assert ours.encode(t)[0] == theirs(t)["input_ids"], t
    a, b = texts[0], texts[100]
    ids, segs = ours.encode(a, b)
    ref = theirs(a, b)
    assert ids == ref["input_ids"] and segs == ref["token_type_ids"]


def test_truncation_trims_longer_side(pair):
    tok, _ = pair
    ids, segs = tok.encode("one two three four five six seven", "alpha beta", maxlen=9)
    assert len(ids) == 9 and ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "one two three four alpha beta"
    assert segs == [0] * 6 + [1] * 3
    with pytest.raises(ValueError, match="maxlen"):
        tok.encode("one two three four five six seven", maxlen=5, truncate=False)
    long = tok.encode("word " * 1000, maxlen=512)[0]
    assert len(long) == 512


def test_pre_tokenize_keeps_vocab_words_whole():
    from kexue.text.tokenizer import jieba_words

    texts = datasets.chinese_text(limit=200)
    vocab = build_vocab(texts) + ["科学", "空间"]
    tok = Tokenizer(vocab, pre_tokenize=jieba_words)
    tokens = tok.tokenize("科学空间的文章")
    assert "科学" in tokens and "空间" in tokens
    text = texts[5]
    assert tok.decode(tok.encode(text)[0]).replace(" ", "") == text.lower().replace(" ", "").replace("\n", "")


def test_vocab_without_specials_is_an_error():
    with pytest.raises(ValueError, match="special tokens"):
        Tokenizer(["a", "b", "c"])
