"""The README's technique -> module table stays true: every path it names exists, and for every post it
names (《…》) at least one of the modules on that row names the post in its docstring, so a newcomer who
searches the code for a post's title lands on its implementation."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _rows() -> list[tuple[str, list[str]]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("## Find a technique by its post", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| post") and not line.startswith("|---"):
            post, where = [c.strip() for c in line.strip().strip("|").split("|")][:2]
            rows.append((post, re.findall(r"`((?:kexue|experiments|benchmarks)/[^`]*)`", where)))
    return rows


def _norm(s: str) -> str:
    """Titles are quoted with full-width and ASCII punctuation interchangeably: compare without it."""
    s = s.replace("：", ":").replace("，", ",").replace("！", "!").replace("、", ",")
    return re.sub(r"[\s\"'“”‘’「」]", "", s)


ROWS = _rows()


def test_the_table_is_there():
    assert len(ROWS) >= 30


@pytest.mark.parametrize("post,paths", ROWS, ids=[r[0][:40] for r in ROWS])
def test_row(post, paths):
    assert paths, f"row {post!r} names no module"
    docs = ""
    for p in paths:
        path = REPO / p
        assert path.exists(), f"README names {p}, which does not exist"
        if path.is_dir():
            path = path / "__init__.py"
        if path.suffix == ".py" and path.is_file():
            docs += ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    for title in re.findall(r"《([^》]+)》", post):
        assert _norm(title) in _norm(docs), f"no module of the row names the post 《{title}》 in its docstring: {paths}"
