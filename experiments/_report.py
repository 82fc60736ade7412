"""Shared end of the experiments: a markdown table + JSON numbers + a PNG figure, each written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    from kexue.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    pyplot().close(fig)


def write_report(out: Path, name: str, lines: list[str], data: dict[str, Any]) -> None:
    """``out/name.md`` (the printed table) and ``out/name.json`` (the numbers behind it); echo the table."""
    from kexue.io import write_json, write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    write_json(out / f"{name}.json", data)
    print("\n".join(lines))
