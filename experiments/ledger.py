"""The post ledger: one row per seed post, from the facts curated in ``ledger_posts*.py`` and the numbers the
experiments and benchmarks already wrote.

    PYTHONPATH=. python experiments/ledger.py            # rewrites docs/ledger.md
    PYTHONPATH=. python experiments/ledger.py --check    # exit 1 if docs/ledger.md is stale

The seed posts are the excerpts in ``shared/seeds/*.txt`` (:func:`kexue.data.paths.seeds_root`): each post is a
title line followed by a line starting "By 苏剑林"; a title may also sit at the end of the previous line, after an
excerpt's closing "引用" or "最近评论". Every seed title must have exactly one :class:`Post` and every post a seed.

A row says what kexue implements for the post (module paths), the test and the independent oracle it is checked
against, the post's published number(s), kexue's number with the command that produced it, and whether the
post's claim holds here: ``yes`` / ``no`` / ``partly`` / ``not measured`` (``not built``, ``not a technique post``).
kexue's numbers are never copied by hand: each is a :class:`J` (a key path in a JSON result file), an :class:`MD`
(a cell of a markdown table) or an :class:`Rx` (a regular expression over a text file), read at generation time,
and the verdict is computed from them by the post's ``judge``.
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling ledger_* modules
from ledger_sources import (LEDGER, MEASURED, NUMBER, REPO, STATUSES, J, LedgerError, MD, Post, Rx, Source,  # noqa: E402,F401
                            Text, Where, _number, _tables, _text)


# ------------------------------------------------------------------------------------------------ posts


# an oracle named in a test cell must be used by the test file: the package's import name appears in it
ORACLE_TOKENS = {
    "transformers": "transformers", "sentence-transformers": "sentence_transformers", "diffusers": "diffusers",
    "lion-pytorch": "lion_pytorch", "scipy": "scipy", "bert4keras": "bert4keras", "jestimator": "jestimator",
    "AveragedModel": "AveragedModel",
}


def posts() -> list[Post]:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from ledger_posts_a import OTHER, POSTS as A
    from ledger_posts_b import POSTS as B

    return A + B + OTHER


# ------------------------------------------------------------------------------------------------ seeds
def norm_title(title: str) -> str:
    """Titles are quoted with full-width and ASCII punctuation interchangeably: compare without either."""
    return re.sub(r"[\s\"'“”‘’「」《》]", "", unicodedata.normalize("NFKC", title))


def seed_posts(root: Path) -> dict[str, dict]:
    """``norm_title -> {"title", "date", "files"}`` for every post excerpted in ``root/*.txt``."""
    found: dict[str, dict] = {}
    files = sorted(root.glob("*.txt"))
    if not files:
        raise LedgerError(f"{root}: no seed files (*.txt)")
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("By 苏剑林") and i > 0:
                title = re.split(r"引用|最近评论", lines[i - 1])[-1].strip()
                if not title:
                    raise LedgerError(f"{path.name}: no title before line {i + 1} ({line[:30]}…)")
                entry = found.setdefault(norm_title(title), {"title": title, "date": line.split("|")[1].strip(),
                                                             "files": []})
                entry["files"].append(path.name)
    return found


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    post: Post
    seed: dict
    n: SimpleNamespace
    status: str
    why: str
    shown: str
    command: str


def evaluate(post: Post, seed: dict, repo: Path) -> Row:
    values = {}
    for name, source in post.numbers.items():
        try:
            values[name] = source.read(repo)
        except LedgerError as e:
            raise LedgerError(f"ledger row {post.anchor}: {e}") from None
    n = SimpleNamespace(**values)
    status, why = post.judge(n) if callable(post.judge) else post.judge
    if status not in STATUSES:
        raise LedgerError(f"ledger row {post.anchor}: status {status!r} is not one of {STATUSES}")
    if status == "not built":
        built = [p for p in post.planned if (repo / p).exists()]
        if built:
            raise LedgerError(f"ledger row {post.anchor} says 'not built' but {', '.join(built)} exists: "
                              "update its entry in experiments/ledger_posts*.py")
    elif status != "not a technique post" and not post.modules:
        raise LedgerError(f"ledger row {post.anchor}: status {status!r} needs the modules that implement the post")
    text = lambda t: t(n) if callable(t) else t  # noqa: E731
    return Row(post, seed, n, status, why, text(post.shown), text(post.command))


def rows(repo: Path = REPO, seeds: Path | None = None) -> list[Row]:
    if seeds is None:
        from kexue.data.paths import seeds_root

        seeds = seeds_root()
    seeded = seed_posts(seeds)
    curated = posts()
    keys = [norm_title(p.title) for p in curated]
    anchors = [p.anchor for p in curated]
    for what, items in (("title", keys), ("anchor", anchors)):
        dupes = sorted({k for k in items if items.count(k) > 1})
        if dupes:
            raise LedgerError(f"experiments/ledger_posts*.py: the same {what} twice: {dupes}")
    missing = [s["title"] for k, s in seeded.items() if k not in keys]
    if missing:
        raise LedgerError(f"seed posts without a ledger entry in experiments/ledger_posts*.py: {missing}")
    extra = [p.title for p in curated if norm_title(p.title) not in seeded]
    if extra:
        raise LedgerError(f"ledger entries whose title is in no seed file: {extra}")
    return [evaluate(p, seeded[norm_title(p.title)], repo) for p in curated]


# ------------------------------------------------------------------------------------------------ render
def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _link(path: str) -> str:
    file = path.split("::")[0]
    return f"[`{path}`](../{file})"


def _title(row: Row) -> str:
    return f"《{row.post.title}》"


def _ref(row: Row) -> str:
    return f"[{_title(row)}](#{row.post.anchor})"


def render(rows_: list[Row]) -> str:
    by = {s: [r for r in rows_ if r.status == s] for s in STATUSES}
    measured = [r for r in rows_ if r.status in MEASURED]
    excerpts = sum(len(r.seed["files"]) for r in rows_)
    twice = [_title(r) for r in rows_ if len(r.seed["files"]) > 1]
    seed_files = sorted({f for r in rows_ for f in r.seed["files"]})
    out = [
        "# The post ledger",
        "",
        "One row per seed post: what kexue implements for it, the test and the independent oracle that check it, "
        "the post's published number(s), kexue's own number with the command that produced it, and whether the "
        "post's claim holds here. Generated by `PYTHONPATH=. python experiments/ledger.py` from the seed excerpts "
        "(`shared/seeds/*.txt`), the facts curated in `experiments/ledger_posts_a.py` / `ledger_posts_b.py` and the "
        "result files the experiments and benchmarks write; `tests/test_ledger.py` fails when this page is stale, "
        "a linked file or test is missing, or a technique page's ledger link points nowhere. Do not edit by hand.",
        "",
        "## Summary",
        "",
        f"- **{len(rows_)} seed posts** ({excerpts} excerpts in {len(seed_files)} seed files"
        + (f"; {', '.join(twice)} appears {'twice' if excerpts - len(rows_) == 1 else 'more than once'}"
           if twice else "")
        + f"). Built in kexue: {len(rows_) - len(by['not built']) - len(by['not a technique post'])}; "
        f"not built: {len(by['not built'])}; not a technique post: {len(by['not a technique post'])}.",
        f"- **Reproduced: {len(measured)}** (kexue measured a number that speaks to the post's claim). "
        f"The claim holds: **{len(by['yes'])}**; partly: **{len(by['partly'])}**; does not hold here: "
        f"**{len(by['no'])}**.",
    ]
    if by["yes"]:
        out.append("  - holds: " + ", ".join(_ref(r) for r in by["yes"]) + ".")
    for status, label in (("partly", "partly"), ("no", "does not hold here")):
        if by[status]:
            out.append(f"  - {label}:")
            out += [f"    - {_ref(r)} — {r.why}" for r in by[status]]
    not_reproduced = by["not measured"] + by["not built"] + by["not a technique post"]
    out.append(f"- **Not reproduced: {len(not_reproduced)}** — not measured: {len(by['not measured'])}, "
               f"not built: {len(by['not built'])}, not a technique post: {len(by['not a technique post'])}.")
    for r in not_reproduced:
        out.append(f"  - {_ref(r)} — {r.status}: {r.why}")
    out += [
        "",
        "Every kexue number below is read from the named result file when this page is generated; small models, "
        "short runs and stand-in data mean only the *direction* of a claim is comparable with the post, not its "
        "levels.",
        "",
        "## Ledger",
        "",
        "| post | kexue implements | test · oracle | published (the post) | kexue's number · command | "
        "claim · holds here? |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows_:
        p = r.post
        where = f"[kexue.fm/archives/{p.archive}](https://kexue.fm/archives/{p.archive})" if p.archive else ""
        post_cell = (f'<a id="{p.anchor}"></a>{_title(r)} ({r.seed["date"]}'
                     + (f", {where}" if where else "") + ")")
        modules = ", ".join(_link(m) for m in p.modules) or "—"
        tests = "; ".join(f"{_link(t)} · {oracle}" for t, oracle in p.tests) or "—"
        shown = r.shown or "—"
        if r.command:
            shown += f" · {r.command}"
        verdict = (f"{p.claim} — " if p.claim else "") + f"**{r.status}**" + (f": {r.why}" if r.why else "")
        out.append("| " + " | ".join(_cell(c) for c in (post_cell, modules, tests, p.published, shown, verdict))
                   + " |")
    return "\n".join(out) + "\n"


def generate(repo: Path = REPO, seeds: Path | None = None) -> str:
    return render(rows(repo, seeds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/ledger.md differs from a fresh build")
    args = ap.parse_args(argv)
    if str(REPO) not in sys.path:  # `python experiments/ledger.py` without PYTHONPATH=.
        sys.path.insert(0, str(REPO))
    try:
        text = generate()
    except (LedgerError, FileNotFoundError) as e:
        print(f"ledger: error: {e}", file=sys.stderr)
        return 2
    if args.check:
        stale = not LEDGER.is_file() or LEDGER.read_text(encoding="utf-8") != text
        print("docs/ledger.md is stale: run PYTHONPATH=. python experiments/ledger.py" if stale
              else "docs/ledger.md is up to date")
        return int(stale)
    from kexue.io import write_text

    write_text(LEDGER, text)
    print(f"wrote {LEDGER.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    # run as the module ``ledger`` (the one ledger_posts_*.py import), so its classes and errors are the same objects
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ledger

    raise SystemExit(ledger.main())
