"""The post ledger stays true: docs/ledger.md is exactly what experiments/ledger.py builds from the seed posts,
the curated facts and the result files; every module, test, oracle and result file a row names exists; every
technique page links its posts' rows and every ledger link in docs/ lands on a row."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import ledger  # noqa: E402

POSTS = ledger.posts()
LEDGER_LINK = re.compile(r"\]\(ledger\.md#([^)\s]+)\)")


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_the_ledger_page_is_up_to_date(shared_dir):
    fresh = ledger.render(ledger.rows(REPO, shared_dir / "seeds"))
    page = (REPO / "docs" / "ledger.md").read_text(encoding="utf-8")
    assert page == fresh, "docs/ledger.md is stale: run PYTHONPATH=. python experiments/ledger.py"


def test_one_row_per_seed_post(shared_dir):
    seeds = ledger.seed_posts(shared_dir / "seeds")
    assert sorted(seeds) == sorted(ledger.norm_title(p.title) for p in POSTS)
    anchors = [p.anchor for p in POSTS]
    assert len(set(anchors)) == len(anchors) and all(re.fullmatch(r"[a-z0-9-]+", a) for a in anchors)
    page = (REPO / "docs" / "ledger.md").read_text(encoding="utf-8")
    assert re.findall(r'<a id="([^"]+)"></a>', page) == anchors


@pytest.mark.parametrize("post", POSTS, ids=[p.anchor for p in POSTS])
def test_every_linked_path_exists(post):
    for module in post.modules:
        path, _, symbol = module.partition("::")
        assert (REPO / path).exists(), f"{post.anchor}: module {path} does not exist"
        if symbol:
            assert symbol in _top_level_names(REPO / path), f"{post.anchor}: {path} defines no {symbol}"
    for test, oracle in post.tests:
        path, _, name = test.partition("::")
        assert (REPO / path).is_file(), f"{post.anchor}: test file {path} does not exist"
        assert name.startswith("test") and name in _top_level_names(REPO / path), f"{post.anchor}: no {test}"
        text = (REPO / path).read_text(encoding="utf-8")
        for package, token in ledger.ORACLE_TOKENS.items():
            if re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", oracle):
                assert token in text, f"{post.anchor}: {path} never uses the oracle it is credited with ({package})"
    for source in post.numbers.values():
        assert (REPO / source.file).is_file(), f"{post.anchor}: result file {source.file} does not exist"
    for page in post.docs:
        assert (REPO / page).is_file(), f"{post.anchor}: technique page {page} does not exist"
    if post.modules:
        assert post.tests or "no unit test" in str(post.command), f"{post.anchor}: a built post names its tests"


def test_technique_pages_link_their_rows():
    anchors = {p.anchor for p in POSTS}
    for page in sorted((REPO / "docs").glob("*.md")):
        for anchor in LEDGER_LINK.findall(page.read_text(encoding="utf-8")):
            assert anchor in anchors, f"docs/{page.name} links ledger.md#{anchor}, which is no ledger row"
    for post in POSTS:
        for page in post.docs:
            assert f"ledger.md#{post.anchor})" in (REPO / page).read_text(encoding="utf-8"), \
                f"{page} describes {post.title} but does not link its ledger row (ledger.md#{post.anchor})"
    built = [p for p in POSTS if p.modules and not p.docs]
    assert not built, f"built posts without a technique page linking them: {[p.anchor for p in built]}"


def test_sources_name_the_file_when_they_cannot_be_read(tmp_path):
    (tmp_path / "r.json").write_text('{"rows": [{"model": "a", "fd": 1.5}]}', encoding="utf-8")
    (tmp_path / "t.md").write_text("| m | x |\n|---|---|\n| a | **0.25** (best) |\n", encoding="utf-8")
    assert ledger.J("r.json", "rows", ledger.Where("model", "a"), "fd").read(tmp_path) == 1.5
    assert ledger.MD("t.md", ("a",), "x").read(tmp_path) == 0.25
    for source, message in ((ledger.J("r.json", "rows", ledger.Where("model", "b"), "fd"), "r.json: 0 records"),
                            (ledger.J("r.json", "rows", 0, "nfe"), "r.json: no 'nfe'"),
                            (ledger.J("missing.json", "x"), "missing.json: result file not found"),
                            (ledger.MD("t.md", ("b",), "x"), "t.md: no table row"),
                            (ledger.Rx("t.md", r"loss ([\d.]+)"), "t.md: no match")):
        with pytest.raises(ledger.LedgerError, match=re.escape(message)):
            source.read(tmp_path)


def test_a_post_called_not_built_is_refused_once_its_code_exists(tmp_path):
    import dataclasses

    # every seed post is built today: an unbuilt one, as the ledger would hold it
    post = dataclasses.replace(POSTS[0], modules=[], tests=[], numbers={}, shown="", command="", docs=[],
                               planned=["kexue/not_yet"], judge=("not built", "not in kexue yet"))
    seed = {"title": post.title, "date": "", "files": []}
    assert ledger.evaluate(post, seed, tmp_path).status == "not built"
    (tmp_path / post.planned[0]).mkdir(parents=True)
    with pytest.raises(ledger.LedgerError, match="says 'not built' but"):
        ledger.evaluate(post, seed, tmp_path)


def test_seed_titles_glued_to_the_previous_excerpt_are_found(tmp_path):
    (tmp_path / "000.txt").write_text("标题一\nBy 苏剑林 | 2020-01-01 | 1位读者 | 引用正文。\n正文引用标题二\n"
                                      "By 苏剑林 | 2021-02-02 | 2位读者 | 引用标题三\nBy 苏剑林 | 2022-03-03 | x\n"
                                      "最近评论标题一\nBy 苏剑林 | 2020-01-01 | 3位读者\n", encoding="utf-8")
    seeds = ledger.seed_posts(tmp_path)
    assert {s["title"]: (s["date"], len(s["files"])) for s in seeds.values()} == {
        "标题一": ("2020-01-01", 2), "标题二": ("2021-02-02", 1), "标题三": ("2022-03-03", 1)}
