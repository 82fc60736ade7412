"""Readers of kexue's line formats, for the user's files and the shipped data alike (:mod:`kexue.data.shipped`
reads ``../shared/data`` with these same functions). Every malformed line is refused as
``file:line: what is wrong`` (:class:`DataError`), never dropped or guessed at; a file that is not UTF-8 is
refused naming the file and the line of the first bad byte (:func:`read_lines`, which every reader uses).

* labelled text, TSV: ``text<TAB>label`` (classification) or ``text_a<TAB>text_b<TAB>label``
  (sentence-pair classification) — every line of a file has the same number of columns;
* NER, one ``char TAG`` per line, blank line between sentences; tags in BIO, BIOES or BMES
  (``B-X I-X E-X S-X M-X``, ``O``);
* reading comprehension: the WebQA JSON ``[{question, passages: [{passage, answer}]}]``;
* poems: plain text, one poem per line, optionally ``class<TAB>poem`` on every line;
* dialogues: plain text, one turn per line, a blank line between dialogues;
* fortunes (the ``fortune`` program's files, fortunes-zh): records separated by a line ``%``, ANSI colour
  codes removed; poems in it are records of a title line, an author line ``作者：…`` and the text.
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

TAG_HEADS = ("B", "I", "M", "E", "S")


class DataError(ValueError):
    """A malformed input file; the message starts with ``file:line:``."""


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (``*.gz``: gzip-compressed), without their ends (``\n``, ``\r\n`` or
    ``\r``); a byte-order mark is not part of line 1. Unreadable, not gzip or not UTF-8: :class:`DataError`
    naming the file (and the line of the first byte that is not UTF-8)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines



def require(items, minimum: int, source: str | Path, what: str, why: str = ""):
    """``items`` if there are at least ``minimum`` of them; else :class:`DataError`
    ``SOURCE: N WHATs; at least MINIMUM needed (why)`` — data too small to learn or evaluate anything from is
    refused before any training, naming where it came from and the minimum."""
    n = len(items)
    if n < minimum:
        raise DataError(f"{source}: {n} {what if n == 1 else what + 's'}; at least {minimum} needed"
                        + (f" ({why})" if why else ""))
    return items


def read_labelled(path: str | Path) -> list[tuple[str | tuple[str, str], str]]:
    """``(text, label)`` or ``((text_a, text_b), label)`` rows of a 2- or 3-column TSV."""
    rows, width = [], None
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) not in (2, 3):
            raise DataError(f"{path}:{n}: expected text<TAB>label or text_a<TAB>text_b<TAB>label, "
                            f"got {len(cols)} column(s)")
        if width is None:
            width = len(cols)
        elif len(cols) != width:
            raise DataError(f"{path}:{n}: {len(cols)} columns, but the first line has {width}")
        *texts, label = [c.strip() for c in cols]
        if not label:
            raise DataError(f"{path}:{n}: empty label")
        if not all(texts):
            raise DataError(f"{path}:{n}: empty text")
        rows.append((texts[0] if len(texts) == 1 else tuple(texts), label))
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def read_tagged(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """NER sentences ``(chars, tags)`` from ``char TAG`` lines (BIO / BIOES / BMES); every tag sequence is
    checked (:func:`check_tag_sequence`): an impossible transition is refused naming its line, never guessed."""
    sents, lines, chars, tags, numbers = [], [], [], [], []
    for n, line in enumerate(read_lines(path) + [""], 1):
        if not line.strip():
            if chars:
                sents.append((chars, tags))
                lines.append(numbers)
            chars, tags, numbers = [], [], []
            continue
        parts = line.rsplit(None, 1) if line[0] != " " else [" ", line.strip()]
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected 'char TAG', got {line.strip()!r}")
        ch, tag = parts
        if len(ch) != 1:
            raise DataError(f"{path}:{n}: expected one character before the tag, got {ch!r}")
        head, dash, kind = tag.partition("-")
        if tag != "O" and not (dash and head in TAG_HEADS and kind):
            raise DataError(f"{path}:{n}: bad tag {tag!r} (expected O or B-/I-/E-/S-/M-TYPE)")
        chars.append(ch)
        tags.append(tag)
        numbers.append(n)
    if not sents:
        raise DataError(f"{path}: no sentences")
    closing = next(((t, n) for (_, ts), ns in zip(sents, lines) for t, n in zip(ts, ns) if t[0] in "EMS"), None)
    scheme = "BIOES" if closing else "BIO"
    for (_, ts), ns in zip(sents, lines):
        bad = check_tag_sequence(ts, scheme)
        if bad is not None:
            i, message = bad
            why = f" (the file uses E-/S-/M- tags, e.g. {closing[0]} on line {closing[1]})" if closing else ""
            raise DataError(f"{path}:{ns[i]}: {message}{why}")
    return sents


def check_tag_sequence(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """The first impossible transition of a sentence's tags, ``(index, message)``, or None.

    ``BIO`` (IOB2): ``I-X`` only after ``B-X`` or ``I-X``. ``BIOES`` (also BMES, ``M-`` = ``I-``): an entity is
    ``S-X`` or ``B-X (I-X|M-X)* E-X``: ``I-/M-/E-X`` only after ``B-X`` or ``I-/M-X``, and after ``B-`` or
    ``I-/M-`` only the entity's continuation (not ``O``, ``B-``, ``S-``, another type, nor the sentence end)."""
    def opens(tag: str) -> bool:
        return tag[0] in ("BIM" if scheme == "BIOES" else "")

    prev = "O"
    for i, tag in enumerate(list(tags) + ["O"]):
        head, kind = tag[0], tag[2:]
        end = i == len(tags)
        shown = "the sentence end" if end else repr(tag)
        where = "the sentence start" if i == 0 else repr(prev)
        continues = head in "IME"
        if continues and not (prev[0] in "BIM" and prev[2:] == kind):
            verb = "ends" if head == "E" else "continues"
            return i, f"bad transition {where} -> {shown}: {head}-{kind} {verb} an entity begun by B-{kind} ({scheme})"
        if opens(prev) and not (continues and prev[2:] == kind):
            return (i - 1 if end else i), (f"bad transition {where} -> {shown}: the {prev[2:]} entity begun before "
                                           f"is not closed by E-{prev[2:]} (BIOES)")
        prev = tag
    return None


def _loc(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def read_webqa(path: str | Path) -> list[dict]:
    """WebQA records ``{question, passages: [{passage, answer}]}``, every field checked."""
    text = "\n".join(read_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}:1: expected a non-empty JSON list of {{question, passages}} records")
    # JSON keeps no line numbers: point at the line where the record's question appears
    cursor = 0
    for i, rec in enumerate(data):
        q = rec.get("question") if isinstance(rec, dict) else None
        where = text.find(json.dumps(q, ensure_ascii=False), cursor) if isinstance(q, str) else -1
        line = _loc(text, where) if where >= 0 else 1
        cursor = max(cursor, where)
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{line}: record {i} is not an object")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{path}:{line}: record {i} has no question")
        ps = rec.get("passages")
        if not isinstance(ps, list) or not ps:
            raise DataError(f"{path}:{line}: record {i} has no passages list")
        for j, p in enumerate(ps):
            if not isinstance(p, dict) or not isinstance(p.get("passage"), str) or not isinstance(p.get("answer", ""), str):
                raise DataError(f"{path}:{line}: record {i} passage {j} needs string 'passage' and 'answer'")
            p.setdefault("answer", "")
    return data


def read_poems(path: str | Path) -> list[tuple[str, str]]:
    """``(poem, class)`` per non-empty line; without a TAB every poem gets the class ``poem``."""
    rows, tagged = [], None
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        has_tab = "\t" in line
        if tagged is None:
            tagged = has_tab
        elif has_tab != tagged:
            raise DataError(f"{path}:{n}: {'no' if tagged else 'a'} class<TAB> prefix, unlike the first line")
        if has_tab:
            label, _, poem = line.partition("\t")
            if not label.strip() or not poem.strip() or "\t" in poem:
                raise DataError(f"{path}:{n}: expected class<TAB>poem")
            rows.append((poem.strip(), label.strip()))
        else:
            rows.append((line.strip(), "poem"))
    if not rows:
        raise DataError(f"{path}: no poems")
    return rows


def read_dialogues(path: str | Path) -> list[list[str]]:
    """Dialogues as lists of turns: one turn per line, blank lines between dialogues."""
    out, turns, start = [], [], 1
    for n, line in enumerate(read_lines(path) + [""], 1):
        if line.strip():
            if not turns:
                start = n
            turns.append(line.strip())
            continue
        if turns:
            if len(turns) < 2:
                raise DataError(f"{path}:{start}: a dialogue needs at least 2 turns, got 1")
            out.append(turns)
        turns = []
    if not out:
        raise DataError(f"{path}: no dialogues")
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_AUTHOR = re.compile(r"^作者[:：]\s*")


def _fortune_records(path: str | Path) -> list[tuple[list[tuple[int, str]], str]]:
    """Every non-blank record of a fortune file: its non-blank lines as ``(line number, text)`` and the
    record's text, colour codes removed and stripped."""
    out, lines = [], []
    for n, line in enumerate(read_lines(path) + ["%"], 1):
        if line.rstrip() != "%":
            lines.append((n, _ANSI.sub("", line)))
            continue
        text = "\n".join(ln for _, ln in lines).strip()
        if text:
            out.append(([(k, ln.strip()) for k, ln in lines if ln.strip()], text))
        lines = []
    if not out:
        raise DataError(f"{path}: no records")
    return out


def read_fortunes(path: str | Path) -> list[str]:
    """The records of a fortune file (between lines ``%``), ANSI colour codes removed, stripped."""
    return [text for _, text in _fortune_records(path)]


@dataclass(frozen=True)
class Poem:
    """A poem from fortunes-zh: ``title``, ``author``, ``text`` (lines joined by newlines)."""

    title: str
    author: str
    text: str


def read_fortune_poems(path: str | Path) -> list[Poem]:
    """Poems of a fortune file whose every record is a title line, an author line ``作者：…`` (or ``作者:``)
    and at least one line of text (fortunes-zh's ``tang300`` and ``song100``)."""
    out = []
    for lines, _ in _fortune_records(path):
        if len(lines) < 3:
            raise DataError(f"{path}:{lines[0][0]}: a poem needs a title line, an author line 作者：… and its text; "
                            f"this record has {len(lines)} line(s)")
        (_, title), (n, author), *text = lines
        if not _AUTHOR.match(author):
            raise DataError(f"{path}:{n}: expected the poem's author line 作者：…, got {author[:40]!r}")
        out.append(Poem(title.strip("《》〈〉 "), _AUTHOR.sub("", author), "\n".join(t for _, t in text)))
    return out


__all__ = ["DataError", "Poem", "read_dialogues", "read_fortune_poems", "read_fortunes", "read_labelled", "read_lines",
           "read_poems", "read_tagged", "read_webqa"]
