"""README.zh.md stays in step with README.md: the same two commands, the same use path, every command it
shows exists (a registered command or a Makefile target) and is shown in the English README too, and its
technique table names the same posts and modules, row by row."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _text(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def _code(text: str) -> str:
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S))


def _commands(text: str) -> set[str]:
    """``kexue <command> [<subcommand>]`` and ``make <target>`` as they stand at the start of a code line."""
    found = set()
    for line in _code(text).splitlines():
        m = re.match(r"\s*(make [a-z-]+|kexue [a-z-]+(?: (?:build|add|onnx|bert4keras))?)\b", line)
        if m:
            found.add(m.group(1))
    return found


def _table(text: str, heading: str) -> list[tuple[list[str], list[str]]]:
    part = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("| ")][1:]
    out = []
    for row in rows:
        post, where = [c.strip() for c in row.strip().strip("|").split("|")][:2]
        out.append((re.findall(r"《([^》]+)》", post), re.findall(r"`((?:kexue|experiments|benchmarks)/[^`]*)`", where)))
    return out


def test_same_commands():
    from kexue.recipes import COMMANDS

    zh, en = _commands(_text("README.zh.md")), _commands(_text("README.md"))
    assert {"make demo", "make test"} <= zh
    assert zh <= en, f"README.zh.md shows commands the English README does not: {sorted(zh - en)}"
    makefile = _text("Makefile")
    for command in zh:
        tool, name = command.split()[:2]
        if tool == "make":
            assert re.search(rf"^{re.escape(name)}:", makefile, flags=re.M), f"no Makefile target {name}"
        else:
            assert name in COMMANDS, f"README.zh.md shows `kexue {name}`, which is no command"


def test_same_technique_table():
    zh = _table(_text("README.zh.md"), "## 按文章找技术")
    en = _table(_text("README.md"), "## Find a technique by its post")
    assert len(zh) == len(en) >= 30
    for (zh_posts, zh_paths), (en_posts, en_paths) in zip(zh, en):
        assert zh_posts == en_posts and zh_paths == en_paths, (zh_posts, en_posts)
    for _, paths in zh:
        for p in paths:
            assert (REPO / p).exists(), p


def test_they_point_at_each_other():
    assert "README.zh.md" in _text("README.md") and "README.md" in _text("README.zh.md")
