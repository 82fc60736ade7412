"""The house has floors: every module of ``kexue`` imports only the floors below its own (function-local
imports included), no two modules import each other in a circle, and programs are named in one registry.

Floors, bottom up (an area imports only areas listed before it on a lower rank)::

    1 foundations   io, hardware, hub  <  data, text
    2 tensors       layers  <  heads, losses, optim
    3 models        models
    4 engines       train, generation  <  tools
    5 techniques    similarity, pretraining, diffusion, generative, maths, multimodal   (siblings: never each other)
    6 recipes       recipes
    7 cli           cli
      the face      kexue/__init__.py, __main__.py, _legacy.py
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kexue"

RANK: dict[str, float] = {
    "io": 1.0, "hardware": 1.0, "hub": 1.0, "data": 1.1, "text": 1.1,
    "layers": 2.0, "heads": 2.1, "losses": 2.1, "optim": 2.1,
    "models": 3.0,
    "train": 4.0, "generation": 4.0, "tools": 4.1,
    "similarity": 5.0, "pretraining": 5.0, "diffusion": 5.0, "generative": 5.0, "maths": 5.0, "multimodal": 5.0,
    "recipes": 6.0,
    "cli": 7.0,
    "": 8.0,  # the face: kexue/__init__.py, __main__.py, _legacy.py
}
FACE = {"__init__", "__main__", "_legacy"}

# Imports that break the floors today, each to be removed by restructuring; the list ends empty.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CIRCLES: list[set[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    parts = module.split(".")
    return "" if len(parts) == 1 or parts[1] in FACE else parts[1]


def imports_of(path: Path) -> set[str]:
    """Every ``kexue`` module ``path`` imports, at any depth of the file (relative imports resolved);
    ``from a import b`` counts as importing ``a.b`` when that is a module."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return {m for m in found if m == "kexue" or m.startswith("kexue.")}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def test_every_area_has_a_floor():
    areas = {area(m) for m in MODULES}
    assert areas <= set(RANK), f"areas without a floor: {sorted(areas - set(RANK))}"


def test_no_upward_or_sideways_import():
    bad = set()
    for m, targets in GRAPH.items():
        for t in targets:
            a, b = area(m), area(t)
            if a != b and RANK[b] >= RANK[a]:
                bad.add((m, t))
    unexpected = sorted(bad - KNOWN_UPWARD)
    assert not unexpected, "imports that do not go down a floor:\n" + "\n".join(f"  {m} -> {t}" for m, t in unexpected)
    gone = sorted(KNOWN_UPWARD - bad)
    assert not gone, f"fixed, remove from KNOWN_UPWARD: {gone}"


def _circles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def _is_package_face(m: str) -> bool:
    return MODULES[m].name == "__init__.py"


def test_no_circles():
    # a package's __init__ re-exporting its own modules is not a circle of meaning; drop those edges
    circles = []
    for comp in _circles():
        inner = {m for m in comp if not _is_package_face(m)}
        if len(inner) > 1:
            circles.append(inner)
    unexpected = [c for c in circles if c not in KNOWN_CIRCLES]
    assert not unexpected, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in unexpected)
    gone = [c for c in KNOWN_CIRCLES if c not in circles]
    assert not gone, f"fixed, remove from KNOWN_CIRCLES: {gone}"


def test_no_import_by_string_outside_the_registry():
    """Modules are imported by name only where the design asks for it: the recipe registry (commands load
    lazily), the old-path aliases and a custom folder's task module (the user's, named in its manifest)."""
    allowed = {"kexue.recipes", "kexue._legacy", "kexue.recipes.custom"}
    offenders = []
    for m, p in MODULES.items():
        text = p.read_text(encoding="utf-8")
        if m not in allowed and ("import_module(" in text or "__import__(" in text):
            offenders.append(m)
    assert not offenders, f"modules importing by string: {offenders}"


def test_registry_names_programs_on_their_floors():
    from kexue.recipes import COMMANDS, REGISTRY, TASKS

    names = [r.name for r in REGISTRY]
    assert len(names) == len(set(names)), "a recipe declared twice"
    for r in REGISTRY:
        assert r.module in MODULES, f"{r.name}: no module {r.module}"
        assert area(r.module) in ("recipes", "cli"), f"{r.name}: a program lives in recipes/ or cli/, not {r.module}"
        if r.predictor:  # kexue.load (floor 6) imports it
            assert area(r.module) == "recipes", f"{r.name}: predictor above the recipes floor"
            assert r.predictor in {n.name for n in ast.parse(MODULES[r.module].read_text()).body
                                   if isinstance(n, ast.ClassDef)}, f"{r.name}: no class {r.predictor}"
        if r.function:
            assert r.function in {n.name for n in ast.parse(MODULES[r.module].read_text()).body
                                  if isinstance(n, ast.FunctionDef)}, f"{r.name}: no function {r.function}"
    assert set(TASKS) >= {"ner", "classify", "reading", "poem", "dialogue", "encoder", "generate"}
    assert set(COMMANDS) >= {"ner", "classify", "reading", "poem", "dialogue", "similarity", "evaluate", "pretrain",
                             "zh-mini", "diffusion", "gan", "demo", "convert", "predict", "chat", "embed",
                             "search", "serve"}


@pytest.mark.parametrize("m", sorted(m for m in MODULES if area(m) not in ("recipes", "cli", "")))
def test_library_modules_have_no_programs(m):
    """Argument parsing and ``main`` live in recipes/ and cli/, not in the library floors."""
    tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
    mains = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and (n.name == "main" or n.name.endswith("_main"))]
    assert not mains, f"{m} defines {mains}: move the program to kexue/recipes/"
    assert "argparse" not in {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}, \
        f"{m} imports argparse"
