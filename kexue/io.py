"""Atomic file writing: write to a temporary file beside the target, fsync, then ``os.replace``.

A crash mid-write leaves the previous file intact, never a truncated one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=2)
            f.write("\n")
    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """Save tensors (made contiguous and unshared, as safetensors requires) atomically."""
    flat = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata or {"format": "pt"}))


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format is taken from ``path``'s suffix)."""
    fmt = kwargs.pop("format", Path(path).suffix.lstrip(".") or "png")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def clean_stale_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` files a killed :func:`atomic_write` left in ``folder`` (not recursive).

    Only call this where no other process is writing into ``folder`` at the same time.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(".") and ".tmp" in p.name
             and (p.name.endswith(".tmp") or p.name.rsplit(".tmp", 1)[1].isdigit())]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def fingerprint(obj: Any) -> str:
    """A short sha256 of data (strings, numbers, tensors, arrays, files, nested lists / dicts / tuples):
    the "same data?" check a run folder records. Files are hashed by content."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous()
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, Path):
            h.update(b"F")
            with open(x, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                feed(v)
            h.update(b"]")
        elif x is None or isinstance(x, (str, bytes, bool, int, float)):
            h.update(f"{type(x).__name__}:{x!r};".encode())
        elif hasattr(x, "__dataclass_fields__"):
            feed({k: getattr(x, k) for k in x.__dataclass_fields__})
        else:
            raise TypeError(f"cannot fingerprint a {type(x).__name__}")

    feed(obj)
    return h.hexdigest()[:16]
