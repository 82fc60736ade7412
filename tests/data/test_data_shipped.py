"""The shipped data (../shared/data) is read by the same strict readers as the user's files: a malformed line in
a copy of a real shipped file is refused in one line naming FILE:LINE, a file that is not UTF-8 is refused naming
it, and the real files still read completely, counted here by an independent line count of each file."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from kexue.data import shipped
from kexue.data.files import DataError
from kexue.data.pairs import SIM_ZH_SETS, sim_zh

ROOT = shipped.data_root()


def _lines(path) -> list[str]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8").replace("\r\n", "\n").split("\n")


# ---- the generators: what each file holds, by counting its lines -------------------------------------------
def _nonblank(path) -> int:
    return sum(1 for ln in _lines(path) if ln.strip())


def _split_rows(path, split) -> int:
    return sum(1 for ln in _lines(path)[1:] if ln.split("\t")[0] == split)


def _blocks(path) -> int:
    """Maximal runs of non-blank lines (one NER sentence each)."""
    lines = _lines(path)
    return sum(1 for i, ln in enumerate(lines) if ln.strip() and (i == 0 or not lines[i - 1].strip()))


def _fortune_records(path) -> int:
    """Lines ``%`` close records; a last record may end without one."""
    lines = _lines(path)
    closing = [i for i, ln in enumerate(lines) if ln.rstrip() == "%"]
    return len(closing) + any(ln.strip() for ln in lines[closing[-1] + 1:])


def _author_lines(path) -> int:
    return sum(1 for ln in _lines(path) if "作者" in ln)


def test_real_shipped_data_reads_completely():
    for split in ("train", "valid", "test"):
        assert len(shipped.sts_zh(split)) == _nonblank(ROOT / "sts-b-zh" / f"{split}.tsv")
    gz = ROOT / "sts-b-en" / "stsbenchmark.tsv.gz"
    for split in ("train", "dev", "test"):
        assert len(shipped.sts_en(split)) == _split_rows(gz, split)
    assert sum(len(shipped.sts_en(s)) for s in ("train", "dev", "test")) == _nonblank(gz) - 1  # all but the header
    for split in ("dev", "test"):
        sents = shipped.ner_peoples_daily(split)
        path = ROOT / "ner-peoples-daily" / f"example.{split}"
        assert len(sents) == _blocks(path) and sum(len(c) for c, _ in sents) == _nonblank(path)
    for name in ("chinese", "tang300", "song100"):
        assert len(shipped.fortunes(name)) == _fortune_records(ROOT / "fortunes-zh" / name)
    for name in ("tang300", "song100"):
        poems = shipped.poems(name)
        assert len(poems) == _fortune_records(ROOT / "fortunes-zh" / name) == _author_lines(ROOT / "fortunes-zh" / name)
        assert all(p.title and p.author and p.text for p in poems)
    assert len(shipped.webqa()) == len(json.loads((ROOT / "webqa-sample" / "sample.json").read_text(encoding="utf-8")))
    for name in SIM_ZH_SETS:
        assert len(sim_zh(name, "train")) + len(sim_zh(name, "dev")) == _nonblank(ROOT / "sim-zh" / f"{name}.valid.data")


# ---- malformed copies ------------------------------------------------------------------------------------
@pytest.fixture
def copy(tmp_path, monkeypatch):
    """``copy(rel, edit)``: a copy of the real shipped file ``rel`` under a fake data root (KEXUE_DATA),
    its lines passed through ``edit(lines)``; returns the copy's path."""
    monkeypatch.setenv("KEXUE_DATA", str(tmp_path))

    def make(rel: str, edit=None, raw: bytes | None = None):
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if raw is None:
            lines = _lines(ROOT / rel)
            text = "\n".join(edit(lines) if edit else lines)
            raw = gzip.compress(text.encode("utf-8")) if dst.suffix == ".gz" else text.encode("utf-8")
        dst.write_bytes(raw)
        return dst

    return make


def _set(n: int, value: str):
    """An edit replacing line ``n`` (1-based)."""
    def edit(lines):
        return lines[:n - 1] + [value] + lines[n:]
    return edit


def _refused(read, where: str, what: str):
    with pytest.raises(DataError) as e:
        read()
    msg = str(e.value)
    assert msg.startswith(where) and what in msg and "\n" not in msg, msg


@pytest.mark.parametrize("line, value, what", [
    (3, "只有两列\t5", "expected 3 tab-separated columns"),
    (5, "一个句子\t另一个句子\t很好", "is not a number"),
    (7, "\t另一个句子\t3", "sentence1 is empty"),
])
def test_sts_zh_malformed_line(copy, line, value, what):
    path = copy("sts-b-zh/train.tsv", _set(line, value))
    _refused(lambda: shipped.sts_zh("train"), f"{path}:{line}:", what)


def test_sts_en_malformed_lines(copy):
    rel = "sts-b-en/stsbenchmark.tsv.gz"
    real = _lines(ROOT / rel)
    cols = real[9].split("\t")
    path = copy(rel, _set(10, "\t".join(cols[:-1])))
    _refused(lambda: shipped.sts_en("train"), f"{path}:10:", "7 tab-separated columns, the header has 8")
    copy(rel, _set(12, "\t".join(["training"] + cols[1:])))
    _refused(lambda: shipped.sts_en("test"), f"{path}:12:", "split 'training' is not one of train, dev, test")
    copy(rel, _set(20, "\t".join(cols[:5] + ["n/a"] + cols[6:])))
    _refused(lambda: shipped.sts_en("dev"), f"{path}:20:", "label 'n/a' is not a number")
    copy(rel, _set(1, "\t".join(c for c in real[0].split("\t") if c != "score")))
    _refused(lambda: shipped.sts_en("dev"), f"{path}:1:", "lacks the column(s) score")
    copy(rel, raw=b"not gzip at all")
    _refused(lambda: shipped.sts_en("dev"), f"{path}:", "not a readable gzip file")


@pytest.mark.parametrize("value, what", [("中 X-PER", "bad tag 'X-PER'"), ("中国 B-LOC", "expected one character"),
                                         ("中", "expected 'char TAG'")])
def test_ner_malformed_line(copy, value, what):
    path = copy("ner-peoples-daily/example.dev", _set(7, value))
    _refused(lambda: shipped.ner_peoples_daily("dev"), f"{path}:7:", what)


def test_poem_records_need_title_author_and_text(copy):
    lines = _lines(ROOT / "fortunes-zh" / "tang300")
    author = next(i for i, ln in enumerate(lines, 1) if "作者" in ln and i > 20)
    path = copy("fortunes-zh/tang300", _set(author, "张九龄"))
    _refused(lambda: shipped.poems("tang300"), f"{path}:{author}:", "expected the poem's author line")
    # a record of a title line alone (the lines up to its closing %) is refused at its first line
    end = next(i for i in range(author, len(lines) + 1) if lines[i - 1].rstrip() == "%")
    copy("fortunes-zh/tang300", lambda ls: ls[:author - 1] + ls[end - 1:])
    _refused(lambda: shipped.poems("tang300"), f"{path}:{author - 1}:", "this record has 1 line(s)")


def test_webqa_malformed(copy):
    real = (ROOT / "webqa-sample" / "sample.json").read_text(encoding="utf-8")  # one line
    path = copy("webqa-sample/sample.json", raw=real.replace('{"passages"', '{"passages" 1', 1).encode("utf-8"))
    _refused(lambda: shipped.webqa(), f"{path}:1:", "invalid JSON")
    data = json.loads(real)  # the same records, one field per line, record 3's passages broken
    data[3]["passages"] = "none"
    text = json.dumps(data, ensure_ascii=False, indent=1)
    copy("webqa-sample/sample.json", raw=text.encode("utf-8"))
    line = [i for i, ln in enumerate(text.split("\n"), 1) if json.dumps(data[3]["question"], ensure_ascii=False) in ln]
    _refused(lambda: shipped.webqa(), f"{path}:{line[0]}:", "record 3 has no passages list")


@pytest.mark.parametrize("rel, read", [
    ("sts-b-zh/valid.tsv", lambda: shipped.sts_zh("valid")),
    ("sts-b-en/stsbenchmark.tsv.gz", lambda: shipped.sts_en("dev")),
    ("ner-peoples-daily/example.test", lambda: shipped.ner_peoples_daily("test")),
    ("fortunes-zh/chinese", lambda: shipped.fortunes("chinese")),
    ("webqa-sample/sample.json", lambda: shipped.webqa()),
    ("sim-zh/BQ.valid.data", lambda: sim_zh("BQ", "train")),
])
def test_not_utf8_is_refused_naming_the_file(copy, rel, read):
    text = "\n".join(_lines(ROOT / rel)[:40]).encode("utf-8")
    middle = len(text) // 2  # GBK-encoded words at the end of a line in the middle (webqa's JSON is one line)
    cut = text.find(b"\n", middle) if b"\n" in text[middle:] else text.index(b"{", middle)
    raw = text[:cut] + "中文".encode("gbk") + text[cut:]
    path = copy(rel, raw=gzip.compress(raw) if rel.endswith(".gz") else raw)
    line = text[:cut].count(b"\n") + 1
    _refused(read, f"{path}:{line}:", "not UTF-8 text")


def test_copies_read_like_the_real_files(copy):
    """The fake root itself is not what fails: unchanged copies read exactly like the originals."""
    copy("sts-b-zh/test.tsv")
    copy("fortunes-zh/song100")
    shutil.copy(ROOT / "sts-b-en" / "stsbenchmark.tsv.gz", copy("sts-b-en/stsbenchmark.tsv.gz"))
    assert shipped.data_root() != ROOT
    assert len(shipped.sts_zh("test")) == _nonblank(ROOT / "sts-b-zh" / "test.tsv")
    assert len(shipped.poems("song100")) == _fortune_records(ROOT / "fortunes-zh" / "song100")
    assert len(shipped.sts_en("test")) == _split_rows(ROOT / "sts-b-en" / "stsbenchmark.tsv.gz", "test")
