"""Tokenizer edges, each decided once and documented in kexue.text.tokenizer: an empty batch, decoding a batch
(batch_decode against transformers' batch_decode on real sentences), lone surrogates refused naming the
position, and vocab.txt / tokenizer_config.json that are not UTF-8 named with their line."""
import re

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from kexue.data import shipped as datasets
from kexue.io import NotUTF8Error
from kexue.models.pretrained import minilm_path
from kexue.text.tokenizer import Tokenizer, build_vocab, pad_batch


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(minilm_path())


def test_an_empty_batch_is_empty(tok):
    for batch in (tok.encode_batch([]), tok.encode_batch([], maxlen=8), pad_batch([])):
        assert set(batch) == {"input_ids", "segment_ids", "attention_mask"}
        assert all(v.shape == (0, 0) and v.dtype == torch.long for v in batch.values())
    assert pad_batch([], length=5)["input_ids"].shape == (0, 5)
    assert tok.batch_decode(torch.zeros(0, 0, dtype=torch.long)) == [] and tok.batch_decode([]) == []


def test_batch_decode_matches_transformers_on_real_sentences(tok):
    """Sentences of STS-B en whose tokens decode the same way under both conventions (words, digits and a
    final . ? !): padded together, each row decodes as transformers' batch_decode does."""
    simple = re.compile(r"[a-z0-9]+( [a-z0-9]+)*[.?!]?")
    sents = [s for p in datasets.sts_en("test")[:400] for s in (p.a.lower(), p.b.lower()) if simple.fullmatch(s)]
    assert len(sents) >= 40
    batch = tok.encode_batch(sents)["input_ids"]  # right-padded: [PAD] is skipped like every special token
    hf = BertTokenizer.from_pretrained(str(minilm_path()))
    expected = hf.batch_decode(batch.tolist(), skip_special_tokens=True)
    assert expected == sents  # the oracle reads these back exactly
    assert tok.batch_decode(batch) == expected
    assert tok.batch_decode(batch.tolist()) == expected and tok.batch_decode(batch.numpy()) == expected
    assert [tok.decode(row) for row in batch] == expected


@pytest.mark.parametrize("ids", [torch.tensor([[101, 7592, 102]]), np.array([[101, 7592, 102]]),
                                 [[101, 7592, 102]], [torch.tensor([101, 7592])]])
def test_decode_of_a_batch_points_to_batch_decode(tok, ids):
    with pytest.raises(ValueError, match="decode takes one sequence of ids, got .*; decode a batch with batch_decode"):
        tok.decode(ids)
    with pytest.raises(ValueError, match="batch_decode takes a batch of id sequences, got a 1-D array"):
        tok.batch_decode(torch.tensor([101, 102]))
    assert tok.decode(torch.tensor([101, 7592, 102])) == tok.decode([101, 7592, 102]) == "hello"
    assert tok.decode(np.array([7592])) == tok.decode([torch.tensor(7592)]) == "hello"


def test_lone_surrogates_are_refused_naming_the_position(tok):
    zh = Tokenizer(build_vocab(["北京欢迎你"]))
    for t in (tok, zh):
        for call in (lambda s: t.encode(s), lambda s: t.tokenize(s), lambda s: t.encode_batch(["ok", s]),
                     lambda s: t.encode("fine", s)):
            with pytest.raises(ValueError, match=r"text has a lone surrogate U\+DC80 at position 3 \(not Unicode text"):
                call("北京欢\udc80迎")
    # a real astral character (one code point) is text: tokenized, not refused
    assert tok.tokenize("ok 😀") == BertTokenizer.from_pretrained(str(minilm_path())).tokenize("ok 😀")
    raw = "北京".encode() + b"\x80"  # what errors="surrogateescape" makes of a bad byte
    with pytest.raises(ValueError, match=r"U\+DC80 at position 2"):
        zh.encode(raw.decode("utf-8", errors="surrogateescape"))


def test_vocab_and_tokenizer_config_that_are_not_utf8_are_named(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京"]
    (tmp_path / "vocab.txt").write_bytes("\n".join(vocab[:6]).encode() + "\n".encode() + "京\n".encode("gbk"))
    for load in (lambda: Tokenizer(tmp_path / "vocab.txt"), lambda: Tokenizer.from_pretrained(tmp_path)):
        with pytest.raises(NotUTF8Error, match=re.escape(f"{tmp_path / 'vocab.txt'}:7: not UTF-8 text (byte ")):
            load()
    (tmp_path / "vocab.txt").write_text("\r\n".join(vocab) + "\r\n", encoding="utf-8")  # CRLF lines still read
    assert Tokenizer(tmp_path / "vocab.txt").vocab_size == 7
    (tmp_path / "tokenizer_config.json").write_bytes(b'{\n  "do_lower_case": true,\n  "x": "\xb1\xb1"\n}')
    with pytest.raises(NotUTF8Error, match=re.escape(f"{tmp_path / 'tokenizer_config.json'}:3: not UTF-8 text")):
        Tokenizer.from_pretrained(tmp_path)


def test_tokenizer_json_pipelines_share_the_edges(tmp_path):
    """kexue.text.hf.HFTokenizer (tokenizer.json / spiece.model) behaves the same at every edge: an empty batch,
    batch_decode against transformers' on real sentences, decode of a batch refused, lone surrogates refused."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    from kexue.text import load_tokenizer

    texts = [p.a for p in datasets.sts_en("train")[:300]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=500, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer", "eos_token": '
                                                     '"<|endoftext|>", "unk_token": "<|endoftext|>"}')
    tok = load_tokenizer(tmp_path)
    assert all(v.shape == (0, 0) for v in tok.encode_batch([]).values())
    rows = [tok.encode(p.a)[0] for p in datasets.sts_en("test")[:2]]
    hf = GPT2TokenizerFast(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert tok.batch_decode(rows) == hf.batch_decode(rows, skip_special_tokens=True) == \
        [p.a for p in datasets.sts_en("test")[:2]]
    with pytest.raises(ValueError, match="decode takes one sequence of ids"):
        tok.decode(torch.tensor(rows[:1]))
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800 at position 1"):
        tok.encode("a\ud800b")
