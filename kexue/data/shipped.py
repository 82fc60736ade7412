"""Readers for the real datasets kept beside the repository in ``../shared/data``.

Every reader returns plain Python lists so that recipes, tests and experiments share one
parsing of each format. One setting locates the shared folder: ``$KEXUE_SHARED`` if set, otherwise
``<repo>/../shared`` (the folder next to the repository root, the layout CI uses); it holds
``data/`` and ``seeds/``. ``$KEXUE_DATA`` still overrides the data folder alone.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    """The shared folder (``$KEXUE_SHARED`` or ``<repo>/../shared``) holding ``data/`` and ``seeds/``."""
    env = os.environ.get("KEXUE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def data_root() -> Path:
    """Folder holding the shared datasets (``$KEXUE_DATA`` or ``shared_root()/data``)."""
    env = os.environ.get("KEXUE_DATA")
    root = Path(env) if env else shared_root() / "data"
    if not root.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {root}; set KEXUE_SHARED to the folder holding data/ and seeds/ "
            "(or KEXUE_DATA to the folder holding sts-b-zh/, sts-b-en/, ner-peoples-daily/, fortunes-zh/, "
            "webqa-sample/)"
        )
    return root


def seeds_root() -> Path:
    """Folder holding the shared seed files (``shared_root()/seeds``)."""
    root = shared_root() / "seeds"
    if not root.is_dir():
        raise FileNotFoundError(f"shared seeds folder not found at {root}; set KEXUE_SHARED to the folder "
                                "holding data/ and seeds/")
    return root


@dataclass(frozen=True)
class Pair:
    """A scored sentence pair (STS-B style)."""

    a: str
    b: str
    score: float


def sts_zh(split: str = "train") -> list[Pair]:
    """Chinese STS-B: ``split`` in ``train|valid|test``; integer scores 0-5."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"sts-b-zh split must be train/valid/test, got {split!r}")
    pairs = []
    with open(data_root() / "sts-b-zh" / f"{split}.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                pairs.append(Pair(parts[0], parts[1], float(parts[2])))
    return pairs


def sts_en(split: str = "train") -> list[Pair]:
    """English STS benchmark: ``split`` in ``train|dev|test``; float scores 0-5."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"sts-b-en split must be train/dev/test, got {split!r}")
    pairs = []
    with gzip.open(data_root() / "sts-b-en" / "stsbenchmark.tsv.gz", "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name: i for i, name in enumerate(header)}
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= len(header) and parts[col["split"]] == split:
                pairs.append(Pair(parts[col["sentence1"]], parts[col["sentence2"]], float(parts[col["score"]])))
    return pairs


def sts(lang: str, split: str) -> list[Pair]:
    """Dispatch to :func:`sts_zh` or :func:`sts_en`; ``dev`` and ``valid`` are synonyms."""
    if lang == "zh":
        return sts_zh("valid" if split == "dev" else split)
    if lang == "en":
        return sts_en("dev" if split == "valid" else split)
    raise ValueError(f"unknown STS language {lang!r} (zh or en)")


def ner_peoples_daily(split: str = "dev") -> list[tuple[list[str], list[str]]]:
    """People's Daily NER: list of (characters, BIO tags); ``split`` in ``dev|test``."""
    if split not in ("dev", "test"):
        raise ValueError(f"ner split must be dev/test, got {split!r}")
    sents, chars, tags = [], [], []
    with open(data_root() / "ner-peoples-daily" / f"example.{split}", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if chars:
                    sents.append((chars, tags))
                chars, tags = [], []
                continue
            ch, tag = line.rsplit(" ", 1) if " " in line else (line, "O")
            chars.append(ch if ch else " ")
            tags.append(tag)
    if chars:
        sents.append((chars, tags))
    return sents


@dataclass(frozen=True)
class Poem:
    """A poem from fortunes-zh: ``title``, ``author``, ``text`` (lines joined by newlines)."""

    title: str
    author: str
    text: str


def fortunes(name: str = "chinese") -> list[str]:
    """Records of a fortunes-zh file (``chinese``, ``tang300``, ``song100``), ANSI codes removed."""
    raw = (data_root() / "fortunes-zh" / name).read_text(encoding="utf-8")
    records = [_ANSI.sub("", r).strip() for r in re.split(r"^%\s*$", raw, flags=re.M)]
    return [r for r in records if r]


def poems(name: str) -> list[Poem]:
    """Tang (``tang300``) or Song (``song100``) poems parsed into title / author / text.

    The files mark the title line (green) and the author line (yellow, ``作者：…``) with colour codes.
    """
    out = []
    for rec in fortunes(name):
        lines = [ln.strip() for ln in rec.splitlines() if ln.strip()]
        if len(lines) < 3:
            continue
        title = lines[0].strip("《》〈〉 ")
        author = re.sub(r"^作者[:：]\s*", "", lines[1])
        out.append(Poem(title, author, "\n".join(lines[2:])))
    return out


def chinese_text(limit: int | None = None) -> list[str]:
    """Plain Chinese passages: the fortunes-zh quotes plus Tang and Song poem bodies."""
    texts = fortunes("chinese") + [p.text for p in poems("tang300")] + [p.text for p in poems("song100")]
    return texts[:limit] if limit else texts


def webqa(path: str | os.PathLike | None = None) -> list[dict]:
    """WebQA-format records ``{id, question, passages: [{passage, answer}]}`` (default: the sample)."""
    path = Path(path) if path else data_root() / "webqa-sample" / "sample.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)
