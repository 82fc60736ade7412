"""The ledger's vocabulary: where a number lives in a result file (:class:`J` JSON key paths, :class:`MD` markdown
table cells, :class:`Rx` a regex over a text file) and the curated facts of one seed post (:class:`Post`).
Read by ``experiments/ledger.py`` and declared in ``experiments/ledger_posts_a.py`` / ``ledger_posts_b.py``."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Union


REPO = Path(__file__).resolve().parents[1]


LEDGER = REPO / "docs" / "ledger.md"


STATUSES = ("yes", "partly", "no", "not measured", "not built", "not a technique post")


MEASURED = ("yes", "partly", "no")


NUMBER = r"(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)"


class LedgerError(ValueError):
    """A curated fact or a result file does not say what the ledger expects (one line, naming the file)."""


# ---------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Where:
    """In a list of records, the one whose ``key`` equals ``value``."""

    key: str
    value: Any


@dataclass(frozen=True)
class J:
    """The value at ``path`` (dict keys, list indices, :class:`Where`) in the JSON file ``file``."""

    file: str
    path: tuple

    def __init__(self, file: str, *path: Any):
        object.__setattr__(self, "file", file)
        object.__setattr__(self, "path", path)

    def read(self, repo: Path) -> Any:
        data = json.loads(_text(repo, self.file))
        walked: list[str] = []
        for key in self.path:
            if isinstance(key, Where):
                hits = [r for r in data if isinstance(r, dict) and r.get(key.key) == key.value] \
                    if isinstance(data, list) else []
                if len(hits) != 1:
                    raise LedgerError(f"{self.file}: {len(hits)} records with {key.key} = {key.value!r} "
                                      f"under {'/'.join(walked) or 'the top'} (expected 1)")
                data = hits[0]
            elif isinstance(data, dict) and key in data:
                data = data[key]
            elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
                data = data[key]
            else:
                raise LedgerError(f"{self.file}: no {key!r} under {'/'.join(walked) or 'the top'}")
            walked.append(str(key.value if isinstance(key, Where) else key))
        return data


@dataclass(frozen=True)
class MD:
    """A number in a markdown table of ``file``: the row whose first cells are ``row`` (bold and code marks
    ignored), the column headed ``col``; ``pattern``'s first group is the number (default: the first number)."""

    file: str
    row: tuple[str, ...]
    col: str
    pattern: str = NUMBER

    def read(self, repo: Path) -> float:
        for table in _tables(_text(repo, self.file)):
            header, body = table[0], table[2:]
            if self.col not in header:
                continue
            for cells in body:
                if tuple(cells[: len(self.row)]) == self.row:
                    cell = cells[header.index(self.col)]
                    found = re.search(self.pattern, cell)
                    if not found:
                        raise LedgerError(f"{self.file}: cell ({' / '.join(self.row)}, {self.col}) = {cell!r} "
                                          f"does not match {self.pattern!r}")
                    return _number(found.group(1))
        raise LedgerError(f"{self.file}: no table row {' / '.join(self.row)!r} with a column {self.col!r}")


@dataclass(frozen=True)
class Rx:
    """The number in group ``group`` of the first match of ``pattern`` in ``file``."""

    file: str
    pattern: str
    group: int = 1

    def read(self, repo: Path) -> float:
        found = re.search(self.pattern, _text(repo, self.file))
        if not found:
            raise LedgerError(f"{self.file}: no match for {self.pattern!r}")
        return _number(found.group(self.group))


Source = Union[J, MD, Rx]



def _text(repo: Path, file: str) -> str:
    path = repo / file
    if not path.is_file():
        raise LedgerError(f"{file}: result file not found (rerun the experiment that writes it)")
    return path.read_text(encoding="utf-8")



def _number(text: str) -> float:
    value = float(text.replace(",", ""))
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value



def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as lists of rows of stripped cells (bold / code marks removed)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip().replace("**", "").strip("`").strip() for c in
                     re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current.append(cells)
        elif current:
            if len(current) >= 2:
                tables.append(current)
            current = []
    return tables


Text = Union[str, Callable[[SimpleNamespace], str]]


@dataclass
class Post:
    """The curated facts of one seed post.

    ``tests``: ``("tests/…/test_x.py::test_name", oracle)`` pairs, ``oracle`` naming what the test compares
    against (a package from :data:`ORACLE_TOKENS` is checked to appear in the test file). ``numbers``: name →
    source, read into ``n`` for ``shown`` / ``command`` / ``judge``. ``judge(n) -> (status, why)``, or a fixed
    ``(status, why)`` when nothing is measured. ``docs``: the technique pages that link this row; ``planned``:
    where an unbuilt post will live (the ledger refuses to call it "not built" once that path exists)."""

    anchor: str
    title: str
    archive: int | None
    modules: list[str]
    tests: list[tuple[str, str]]
    published: str
    claim: str
    judge: Union[Callable[[SimpleNamespace], tuple[str, str]], tuple[str, str]]
    numbers: dict[str, Source] = field(default_factory=dict)
    shown: Text = ""
    command: Text = ""
    docs: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
