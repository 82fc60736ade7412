"""Tokenizer.from_pretrained honours tokenizer_config.json's do_lower_case / strip_accents /
tokenize_chinese_chars exactly as transformers.BertTokenizer does, on real mixed-script text;
fields it cannot follow are refused by name."""
import json
import shutil
import unicodedata

import pytest
from transformers import BertTokenizer

from kexue.data import shipped as datasets
from kexue.models.pretrained import minilm_path
from kexue.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def texts():
    out = [p.a for p in datasets.sts_en("test")[:80]] + [p.a for p in datasets.sts_zh("test")[:60]]
    out += datasets.fortunes("chinese")[:30]
    # accented words occur in the English STS-B; keep those rows in particular
    accented = lambda t: any(unicodedata.normalize("NFD", c) != c for c in t)  # noqa: E731
    out += [p.b for p in datasets.sts_en("train") if accented(p.b)][:40]
    return out


def _folder(tmp_path, **cfg):
    shutil.copy(minilm_path() / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", **cfg}))
    return tmp_path


SETTINGS = [
    dict(do_lower_case=True),
    dict(do_lower_case=True, strip_accents=False),
    dict(do_lower_case=False),
    dict(do_lower_case=False, strip_accents=True),
    dict(do_lower_case=True, tokenize_chinese_chars=False),
    dict(do_lower_case=False, strip_accents=False, tokenize_chinese_chars=False),
]


@pytest.mark.parametrize("cfg", SETTINGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_settings_match_bert_tokenizer(tmp_path, texts, cfg):
    ours = Tokenizer.from_pretrained(_folder(tmp_path, **cfg))
    theirs = BertTokenizer(str(tmp_path / "vocab.txt"), **cfg)
    assert sum(unicodedata.normalize("NFD", t) != t for t in texts) >= 10  # accents present
    for t in texts:
        assert ours.encode(t)[0] == theirs(t)["input_ids"], (cfg, t)


def test_settings_change_the_result(tmp_path, texts):
    """Each setting matters on this text, so the test above can fail."""
    ids = {}
    for i, cfg in enumerate(SETTINGS):
        (tmp_path / str(i)).mkdir()
        tok = Tokenizer.from_pretrained(_folder(tmp_path / str(i), **cfg))
        ids[i] = [tok.encode(t)[0] for t in texts]
    assert ids[0] != ids[1]  # strip_accents
    assert ids[0] != ids[2]  # do_lower_case
    assert ids[0] != ids[4]  # tokenize_chinese_chars


@pytest.mark.parametrize("field,value", [("tokenizer_class", "RoFormerTokenizer"), ("do_basic_tokenize", False),
                                         ("never_split", ["[X]"]), ("unk_token", "<unk>"),
                                         ("do_lower_case", "yes")])
def test_unsupported_fields_are_refused_by_name(tmp_path, field, value):
    folder = _folder(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=f"'{field}'.*{tmp_path}"):
        Tokenizer.from_pretrained(folder)


def test_saved_settings_reload(tmp_path):
    tok = Tokenizer(minilm_path() / "vocab.txt", lowercase=False, strip_accents=True, tokenize_chinese_chars=False)
    tok.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert (again.lowercase, again.strip_accents, again.tokenize_chinese_chars) == (False, True, False)
