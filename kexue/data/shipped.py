"""Readers for the real datasets kept beside the repository in ``../shared/data``.

Every reader returns plain Python lists so that recipes, tests and experiments share one parsing of each
format, and that parsing is the strict one the user's files get (:mod:`kexue.data.files`,
:mod:`kexue.data.pairs`): a malformed line is refused as ``file:line: what is wrong``, a file that is not
UTF-8 is refused naming it, nothing is dropped silently. One setting locates the shared folder
(:mod:`kexue.data.paths`): ``$KEXUE_SHARED`` if set, otherwise ``<repo>/../shared``; it holds ``data/`` and
``seeds/``. ``$KEXUE_DATA`` still overrides the data folder alone.

    sts-b-zh/{train,valid,test}.tsv      read_pairs         sentence1 TAB sentence2 TAB score
    sts-b-en/stsbenchmark.tsv.gz         read_sts_table     header split ... score sentence1 sentence2
    ner-peoples-daily/example.{dev,test} read_tagged        char TAG per line, blank line between sentences
    fortunes-zh/{chinese,tang300,song100} read_fortunes / read_fortune_poems   records between lines %
    webqa-sample/sample.json             read_webqa         [{question, passages: [{passage, answer}]}]
    sim-zh/*.valid.data                  read_pairs         (kexue.data.pairs.sim_zh)
"""
from __future__ import annotations

import os
from pathlib import Path

from kexue.data.files import Poem, read_fortune_poems, read_fortunes, read_tagged, read_webqa
from kexue.data.pairs import Pair, read_pairs, read_sts_table
from kexue.data.paths import REPO, data_root, seeds_root, shared_root


def sts_zh(split: str = "train") -> list[Pair]:
    """Chinese STS-B: ``split`` in ``train|valid|test``; integer scores 0-5."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"sts-b-zh split must be train/valid/test, got {split!r}")
    return read_pairs(data_root() / "sts-b-zh" / f"{split}.tsv")


def sts_en(split: str = "train") -> list[Pair]:
    """English STS benchmark: ``split`` in ``train|dev|test``; float scores 0-5."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"sts-b-en split must be train/dev/test, got {split!r}")
    return read_sts_table(data_root() / "sts-b-en" / "stsbenchmark.tsv.gz", split)


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
    return read_tagged(data_root() / "ner-peoples-daily" / f"example.{split}")


def fortunes(name: str = "chinese") -> list[str]:
    """Records of a fortunes-zh file (``chinese``, ``tang300``, ``song100``), ANSI codes removed."""
    return read_fortunes(data_root() / "fortunes-zh" / name)


def poems(name: str) -> list[Poem]:
    """Tang (``tang300``) or Song (``song100``) poems parsed into title / author / text.

    The files mark the title line (green) and the author line (yellow, ``作者：…``) with colour codes.
    """
    return read_fortune_poems(data_root() / "fortunes-zh" / name)


def chinese_text(limit: int | None = None) -> list[str]:
    """Plain Chinese passages: the fortunes-zh quotes plus Tang and Song poem bodies."""
    texts = fortunes("chinese") + [p.text for p in poems("tang300")] + [p.text for p in poems("song100")]
    return texts[:limit] if limit else texts


def webqa(path: str | os.PathLike | None = None) -> list[dict]:
    """WebQA-format records ``{id, question, passages: [{passage, answer}]}`` (default: the sample)."""
    return read_webqa(Path(path) if path else data_root() / "webqa-sample" / "sample.json")


__all__ = ["REPO", "Pair", "Poem", "chinese_text", "data_root", "fortunes", "ner_peoples_daily", "poems", "seeds_root",
           "shared_root", "sts", "sts_en", "sts_zh", "webqa"]
