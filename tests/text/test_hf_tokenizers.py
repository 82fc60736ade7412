"""The tokenizers supported families ship, read by kexue and compared with transformers' own classes built
offline from the same files: a byte-level BPE (GPT-2's kind) against ``GPT2TokenizerFast`` (vocab.json +
merges.txt), a Unigram and a WordPiece ``tokenizer.json`` against ``AutoTokenizer``, and a SentencePiece
``spiece.model`` against ``T5TokenizerFast`` and against ``sentencepiece`` itself. Each is trained here with
the ``tokenizers`` / ``sentencepiece`` libraries on real Chinese and mixed Chinese-English text (STS-B zh,
STS-B en, fortunes-zh) and compared on held-out sentences: ids, pairs with their type ids, truncation and
decoding."""
from __future__ import annotations

import json

import pytest

from kexue.data.shipped import fortunes, sts_en, sts_zh
from kexue.text import HFTokenizer, Tokenizer, load_tokenizer, sentencepiece_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus():
    zh = [p.a for p in sts_zh("train")[:1500]] + [p.b for p in sts_zh("train")[:1500]]
    en = [p.a for p in sts_en("train")[:800]]
    mixed = [f"{a} {b}" for a, b in zip(zh[:600], en[:600])]
    return zh + en + mixed + fortunes("chinese")[:300]


@pytest.fixture(scope="module")
def held_out():
    zh = [p.a for p in sts_zh("test")[:60]]
    en = [p.a for p in sts_en("test")[:30]]
    return zh + en + [f"{a}（{b}）" for a, b in zip(zh[:30], en[:30])] + ["  空格  与\t制表符 mixed  ", "Ünïcødé ½ ｆｕｌｌ"]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, corpus):
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=1200, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))  # vocab.json + merges.txt: what GPT2TokenizerFast reads
    bpe.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"}))
    return folder


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory, corpus):
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("mt5")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(folder / "spiece"),
                                   vocab_size=1500, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=0.995, num_threads=1, minloglevel=2)
    return folder


def test_gpt2_byte_level_bpe(gpt2_folder, held_out):
    ours = load_tokenizer(gpt2_folder)
    theirs = transformers.GPT2TokenizerFast(str(gpt2_folder / "vocab.json"), str(gpt2_folder / "merges.txt"))
    assert isinstance(ours, HFTokenizer) and ours.vocab_size == len(theirs)
    assert ours.sep_id == ours.eos_id == theirs.eos_token_id and ours.pad_id is None
    for t in held_out:
        ids, segs = ours.encode(t)
        assert ids == theirs(t)["input_ids"] and set(segs) == {0}, t
        assert ours.decode(ids) == theirs.decode(ids), t
        assert ours.tokenize(t) == theirs.tokenize(t)
    multi = sum(len(ours.encode(t)[0]) > len(t) for t in held_out[:60])  # Chinese: several bytes per char
    assert multi > 0


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_tokenizer_json(tmp_path, corpus, held_out, kind):
    from tokenizers import BertWordPieceTokenizer, SentencePieceUnigramTokenizer

    if kind == "unigram":
        tok = SentencePieceUnigramTokenizer()
        tok.train_from_iterator(corpus, vocab_size=5000, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
        config = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        from tokenizers.processors import BertProcessing

        tok = BertWordPieceTokenizer(lowercase=True)
        tok.train_from_iterator(corpus, vocab_size=1500)
        tok.post_processor = BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
        config = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                **config}))
    ours = load_tokenizer(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ours.vocab_size == len(theirs)
    for a, b in zip(held_out, held_out[1:]):
        assert ours.encode(a)[0] == theirs(a)["input_ids"], a
        ids, segs = ours.encode(a, b)
        pair = theirs(a, b, return_token_type_ids=True)
        assert (ids, segs) == (pair["input_ids"], pair["token_type_ids"]), (a, b)
        cut = theirs(a, b, truncation="longest_first", max_length=24, return_token_type_ids=True)
        assert ours.encode(a, b, maxlen=24) == (cut["input_ids"], cut["token_type_ids"]), (a, b)
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    if kind == "wordpiece":
        assert ours.encode("你好")[0][0] == ours.cls_id and ours.encode("你好")[0][-1] == ours.sep_id
        assert any(1 in ours.encode(a, b)[1] for a, b in zip(held_out, held_out[1:]))
        wordpiece = Tokenizer(tok.get_vocab())  # kexue's own WordPiece over the same vocabulary agrees
        assert all(wordpiece.encode(t)[0] == ours.encode(t)[0] for t in held_out)


def test_sentencepiece_model_is_t5_tokenizer(spm_folder, held_out):
    import sentencepiece

    ours = load_tokenizer(spm_folder)
    theirs = transformers.T5TokenizerFast.from_pretrained(str(spm_folder))  # converts spiece.model
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_folder / "spiece.model"))
    assert ours.vocab_size == len(theirs) == sp.get_piece_size() + 100  # the 100 sentinels <extra_id_i>
    assert ours.token_to_id("<extra_id_0>") == theirs.convert_tokens_to_ids("<extra_id_0>")
    assert ours.eos_id == theirs.eos_token_id == 1 and ours.pad_id == 0 and ours.unk_id == 2
    for a, b in zip(held_out, held_out[1:]):
        ids = ours.encode(a)[0]
        assert ids == theirs(a)["input_ids"] == sp.encode(a) + [1], a
        assert ours.encode(a, b)[0] == theirs(a, b)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), a
        if 2 not in ids:  # sentencepiece writes <unk> as " ⁇ "
            assert ours.decode(ids) == sp.decode(ids[:-1]), a
    assert any(2 in ours.encode(t)[0] for t in held_out)  # unknown characters occur (and map to <unk>)
    saved = spm_folder / "saved"
    ours.save(saved)
    again = load_tokenizer(saved)  # tokenizer.json written by save reads back the same
    assert all(again.encode(t) == ours.encode(t) for t in held_out)


def test_sentencepiece_extra_ids_and_refusals(spm_folder, tmp_path):
    assert sentencepiece_tokenizer(spm_folder / "spiece.model", extra_ids=0).vocab_size == \
        sentencepiece_tokenizer(spm_folder / "spiece.model").vocab_size - 100
    (tmp_path / "spiece.model").write_bytes(b"\x0a\x05hello")
    with pytest.raises(ValueError, match="spiece.model is not a SentencePiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "spiece.model").unlink()
    with pytest.raises(FileNotFoundError, match="has no tokenizer: kexue reads vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json is not a tokenizers file"):
        load_tokenizer(tmp_path)


def test_a_special_token_the_vocabulary_lacks_is_refused(gpt2_folder, tmp_path):
    import shutil

    shutil.copy(gpt2_folder / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    with pytest.raises(ValueError, match="pad_token '<pad>' is not in the tokenizer's vocabulary"):
        load_tokenizer(tmp_path)
