"""Models named by hub id: ``org/name`` or ``org/name@revision`` -> a local folder, through ``huggingface_hub``.

Every place that takes a model folder (``build_model(checkpoint=...)``, ``kexue.load``, ``--checkpoint``,
the use commands) passes the name through :func:`resolve`: an existing local path is used as it is;
anything else shaped like a hub id is downloaded into huggingface_hub's cache (``HF_HUB_CACHE`` /
``HF_HOME``), from ``HF_ENDPOINT`` (a mirror, or a local server in tests), and read from the cache alone
when ``HF_HUB_OFFLINE=1``. Only the files kexue reads are fetched (no TensorFlow / Flax / ONNX / GGUF
weights). Failures are one line naming the id and what is missing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
# weights kexue never reads: other frameworks' formats
SKIP = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.gguf", "*.mlmodel", "*.ckpt.*",
        "onnx/*", "openvino/*", "coreml/*", "flax_model*", "tf_model*", "rust_model*"]


class HubError(ValueError):
    """A hub id that cannot be turned into a local folder (one line, naming the id)."""


def parse(spec: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` if ``spec`` is shaped like a hub id, else ``None``."""
    m = HUB_ID.match(str(spec))
    return (m.group("repo"), m.group("revision")) if m else None


def is_hub_id(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names no existing local path and is shaped like ``org/name[@revision]``."""
    return not Path(spec).exists() and parse(str(spec)) is not None


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def resolve(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder for ``spec``: an existing path as it is, or the cached snapshot of a hub id.

    ``HubError`` when the repository, the revision or (offline) the cached copy does not exist."""
    path = Path(spec)
    if path.exists() or parse(str(spec)) is None:
        return path
    repo, revision = parse(str(spec))
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError:  # pragma: no cover - a dependency of kexue
        raise HubError(f"{spec}: loading a model by hub id needs the huggingface_hub package") from None
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache_dir, ignore_patterns=SKIP)
    except RevisionNotFoundError:
        raise HubError(f"{spec}: no local folder of that name, and revision {revision!r} of {repo} is not on "
                       f"{endpoint()}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{spec}: no local folder of that name, and no model {repo!r} on {endpoint()}") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else f"{endpoint()} cannot be reached"
        raise HubError(f"{spec}: no local folder of that name, and not in the hub cache ({why})") from None
    return Path(folder)


def require(folder: Path, spec: str | os.PathLike, *names: str) -> None:
    """Refuse a resolved folder lacking one of ``names``, naming the hub id (or path) and the file."""
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        where = f"the hub repository {spec}" if parse(str(spec)) and not Path(spec).exists() else str(folder)
        have = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "nothing"
        raise HubError(f"{where} has no {', '.join(missing)} (it holds: {have})")


__all__ = ["HubError", "is_hub_id", "parse", "require", "resolve"]
