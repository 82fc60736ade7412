"""Atomic writing of files and of whole folders.

* A file: write to a temporary file beside the target, fsync, then ``os.replace`` (:func:`atomic_write`);
  a crash mid-write leaves the previous file intact, never a truncated one.
* A folder (a saved model: weights, config, vocabulary, head, settings, card): :func:`write_folder` builds
  the new folder beside the old one, fsyncs it, writes ``manifest.json`` (every file with its size and
  sha256, and what the folder holds) last, and swaps it in by one rename; :func:`check_folder` verifies a
  folder against its manifest. See :func:`write_folder` for the crash guarantees.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
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
    stale = [p for p in folder.iterdir() if p.is_file() and _is_temp(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _is_temp(name: str) -> bool:
    """A name :func:`atomic_write` gives its temporary files (``.NAME.XXXXXXXX.tmp``)."""
    return name.startswith(".") and ".tmp" in name and (name.endswith(".tmp") or name.rsplit(".tmp", 1)[1].isdigit())


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


# --- folders written as one unit ------------------------------------------------------------------------

MANIFEST = "manifest.json"
FOLDER_FORMAT, FOLDER_VERSION = "kexue-folder", 1
KINDS = ("task", "encoder", "generator", "diffusion", "gan", "custom")
POOLINGS = ("mean", "cls", "max", "last-token", "weighted-mean", "first-last-avg", "pooler")  # kexue.heads.pooling.MODES
#: names a model folder is made of: never carried from an old folder into a new one (see :func:`write_folder`)
MODEL_FILES = re.compile(r"manifest\.json|config\.json|task\.json|metrics\.json|tokenizer(_config)?\.json|"
                         r"special_tokens_map\.json|generation_config\.json|vocab\.txt|README\.md|loss\.png|"
                         r"samples\.png|eval_predictions\.jsonl|.*\.safetensors|.*\.bin|.*\.index\.json")
#: names whose presence means a folder holds a saved model (``overwrite`` is needed to replace it)
HOLDS_MODEL = re.compile(r"manifest\.json|config\.json|metrics\.json|task\.json|model\.safetensors|"
                         r"head\.safetensors|pytorch_model\.bin|.*\.index\.json|(model|pytorch_model)-\d{5}-of-\d{5}\..*")
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.kexue-(?P<role>new|old)-(?P<pid>\d+)-[0-9a-f]{8}")
_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float), "object": dict, "list": list}


class FolderError(ValueError):
    """A folder that cannot be written or used as it is; the one-line message names the file (and field)."""


def check_type(value: Any, spec: str, path: str | os.PathLike, field: str) -> Any:
    """``value`` of JSON field ``field`` in file ``path`` must match ``spec``: ``string``, ``integer``,
    ``boolean``, ``number``, ``object``, ``list``, ``list of strings``, each optionally ``... or null``;
    otherwise :class:`FolderError` naming the file and the field."""
    base, _, nullable = spec.partition(" or ")
    if value is None and nullable == "null":
        return value
    if base == "list of strings":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, _TYPES[base]) and not (base in ("integer", "number") and isinstance(value, bool))
    if not ok:
        raise FolderError(f"{path}: field '{field}' must be {'an' if spec[0] in 'aeiou' else 'a'} {spec}, "
                          f"got {json.dumps(value, ensure_ascii=False)[:80]}")
    return value


class NotUTF8Error(ValueError):
    """A text file that is not UTF-8; the message is ``FILE:LINE: not UTF-8 text (byte N)``."""


def read_utf8(path: str | os.PathLike, error: type[ValueError] = NotUTF8Error) -> str:
    """The text of a UTF-8 file; bytes that are not UTF-8 raise ``error`` naming the file, the line and the byte
    offset of the first bad one (``FileNotFoundError`` / ``OSError`` pass through)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file, bad UTF-8 or invalid JSON is a :class:`FolderError` naming it."""
    path = Path(path)
    try:
        return json.loads(read_utf8(path, FolderError))
    except FileNotFoundError:
        raise FolderError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise FolderError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def safetensors_header(path: str | os.PathLike, metadata: bool = False) -> Any:
    """The tensors a safetensors file holds, ``{name: {"dtype", "shape", "data_offsets"}}``, read from its
    header without loading any tensor (``metadata=True``: also its ``__metadata__``, as a pair); a truncated
    or malformed file is a :class:`FolderError` naming it.

    Layout: 8 bytes (little-endian header length n), n bytes of JSON, then the data; the file ends
    exactly where the last tensor's ``data_offsets`` end."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise FolderError(f"{path}: truncated or not a safetensors file ({size} bytes; "
                              + ("no header)" if n < 0 else f"its header claims {n} bytes)"))
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FolderError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise FolderError(f"{path}: not a safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise FolderError(f"{path}: not a safetensors file (a tensor without data_offsets)") from None
    if 8 + n + end != size:
        what = "truncated" if 8 + n + end > size else "has bytes past its last tensor"
        raise FolderError(f"{path}: {what} ({size} bytes; its header describes {8 + n + end})")
    return (header, meta) if metadata else header


def folder_info(kind: str, task: str | None = None, labels: list[str] | None = None, pooling: str | None = None,
                post_processing: dict[str, dict] | None = None, task_module: str | None = None) -> dict[str, Any]:
    """What a model folder holds, as its manifest records it (checked like a manifest read back):

    * ``kind``: ``task`` (a recipe's task model), ``encoder`` (sentence vectors), ``generator`` (a text LM),
      ``diffusion``, ``gan`` or ``custom`` (a task of the user's own);
    * ``task``: the task name (required for ``task`` and ``custom``, null otherwise);
    * ``labels``: the label of each output row of the head, or null;
    * ``pooling``: how token states become one vector (a mode of :func:`kexue.heads.pooling.pool`), or null;
    * ``post_processing``: ``{name: {...}}`` applied to the outputs in order, e.g. ``{"whitening": {"file":
      "whitening.safetensors", "beta": 0.0, ...}}``, an encoder's ``{"normalize": {}}`` (L2); a ``file`` it names
      must be one of the folder's files;
    * ``task_module`` (``custom`` only, optional): where the task is declared, ``"package.module:ATTRIBUTE"``,
      imported by name when the folder is loaded (:mod:`kexue.recipes.custom`); never a file of the folder.
    """
    info = {"kind": kind, "task": task, "labels": labels, "pooling": pooling, "post_processing": post_processing or {}}
    if task_module is not None:
        info["task_module"] = task_module
    _check_info(info, "folder_info")
    return info


#: ``task_module``: a dotted module path and the attribute holding the task
TASK_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _check_info(m: dict, where: str | os.PathLike) -> None:
    kind = check_type(m.get("kind"), "string", where, "kind")
    if kind not in KINDS:
        raise FolderError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    task = check_type(m.get("task"), "string or null", where, "task")
    if (kind in ("task", "custom")) != bool(task):
        raise FolderError(f"{where}: field 'task' " + ("must name the task of a folder of kind "
                          f"{kind!r}" if kind in ("task", "custom") else f"must be null for a folder of kind {kind!r}"))
    labels = check_type(m.get("labels"), "list of strings or null", where, "labels")
    if labels is not None and len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise FolderError(f"{where}: field 'labels' lists {dup!r} twice")
    pooling = check_type(m.get("pooling"), "string or null", where, "pooling")
    if pooling is not None and pooling not in POOLINGS:
        raise FolderError(f"{where}: field 'pooling' must be one of {', '.join(POOLINGS)} or null, got {pooling!r}")
    ref = check_type(m.get("task_module"), "string or null", where, "task_module")
    if ref is not None and kind != "custom":
        raise FolderError(f"{where}: field 'task_module' is only for a folder of kind 'custom', not {kind!r}")
    if ref is not None and not TASK_MODULE.fullmatch(ref):
        raise FolderError(f"{where}: field 'task_module' must be 'package.module:ATTRIBUTE', got {ref!r}")
    for name, step in check_type(m.get("post_processing", {}), "object", where, "post_processing").items():
        check_type(step, "object", where, f"post_processing.{name}")
        check_type(step.get("file"), "string or null", where, f"post_processing.{name}.file")


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The checked ``manifest.json`` of ``directory`` (None if it has none: a folder of an older kexue or
    another tool). Hashes are not verified here: see :func:`check_folder`."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    m = read_json(path)
    check_type(m, "object", path, "(top level)")
    if m.get("format") != FOLDER_FORMAT:
        raise FolderError(f"{path}: field 'format' must be {FOLDER_FORMAT!r}, got {m.get('format')!r}")
    version = check_type(m.get("version"), "integer", path, "version")
    if version > FOLDER_VERSION:
        raise FolderError(f"{path}: format version {version} is newer than this kexue reads ({FOLDER_VERSION}); "
                          "upgrade kexue")
    _check_info(m, path)
    for rel, rec in check_type(m.get("files"), "object", path, "files").items():
        if rel == MANIFEST or rel.startswith("/") or ".." in rel.split("/") or not rel:
            raise FolderError(f"{path}: field 'files' lists an invalid name {rel!r}")
        check_type(rec, "object", path, f"files.{rel}")
        if check_type(rec.get("size"), "integer", path, f"files.{rel}.size") < 0 or \
                not re.fullmatch(r"[0-9a-f]{64}", str(check_type(rec.get("sha256"), "string", path, f"files.{rel}.sha256"))):
            raise FolderError(f"{path}: field 'files.{rel}' needs a size >= 0 and a 64-digit hex sha256")
    for name in check_type(m.get("other", []), "list of strings", path, "other"):
        if "/" in name or name in (MANIFEST, "", ".", "..") or name in m["files"]:
            raise FolderError(f"{path}: field 'other' lists an invalid name {name!r}")
    for name, step in m["post_processing"].items():
        if step.get("file") is not None and step["file"] not in m["files"]:
            raise FolderError(f"{path}: field 'post_processing.{name}.file' names {step['file']!r}, which is not "
                              "one of the folder's files")
    return m


def _digest(path: Path, sync: bool = False) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, h.hexdigest()


def check_folder(directory: str | os.PathLike, required: bool = False) -> dict | None:
    """Verify ``directory`` against its manifest: every listed file present with its size and sha256, and
    nothing else in the folder but the manifest and the ``other`` entries it records (e.g. a run folder
    kept beside the model). Returns the manifest, or None if there is none and not ``required``.
    Each failure is one :class:`FolderError` line naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FolderError(f"{directory}: no such folder")
    m = read_manifest(directory)
    if m is None:
        if required:
            raise FolderError(f"{directory / MANIFEST}: missing (not a folder written by kexue.io.write_folder)")
        return None
    missing = [rel for rel in m["files"] if not (directory / rel).is_file()]
    if missing:
        where = directory / missing[0] if len(missing) == 1 else f"{directory}: {', '.join(missing)}"
        raise FolderError(f"{where}: missing (listed in {MANIFEST})")
    for rel, rec in m["files"].items():
        path = directory / rel
        size = path.stat().st_size
        if size != rec["size"]:
            raise FolderError(f"{path}: {size} bytes, but {MANIFEST} records {rec['size']} (truncated or replaced "
                              "after the save)")
        if _digest(path)[1] != rec["sha256"]:
            raise FolderError(f"{path}: its sha256 differs from the one {MANIFEST} records (changed after the save)")
    listed = {rel.split("/")[0] for rel in m["files"]}
    known = listed | set(m.get("other", [])) | {MANIFEST}
    for path in sorted(directory.iterdir()):
        if path.name not in known:
            raise FolderError(f"{path}: not listed in {MANIFEST} (added after the save?); remove it or save again")
    for top in sorted(n for n in listed if (directory / n).is_dir()):
        for path in sorted((directory / top).rglob("*")):
            if not path.is_dir() and path.relative_to(directory).as_posix() not in m["files"]:
                raise FolderError(f"{path}: not listed in {MANIFEST} (added after the save?); remove it or save again")
    return m


def holds_model(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds (part of) a saved model: a manifest, a config, weights, settings or metrics."""
    directory = Path(directory)
    return directory.is_dir() and any(HOLDS_MODEL.fullmatch(p.name) for p in directory.iterdir())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAMEAT2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except Exception:  # noqa: BLE001 - no such function (not Linux / old glibc): use the fallback
            _RENAMEAT2 = False
    if not _RENAMEAT2:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _RENAMEAT2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """Staging (``new``) and set-aside (``old``) folders that writes of ``out`` left beside it, newest first."""
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.iterdir():
        m = _LEFTOVER.fullmatch(p.name)
        if m and m["name"] == out.name:
            found.append((p, m["role"], int(m["pid"])))
    return sorted(found, key=lambda x: -x[0].lstat().st_mtime)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _carried_back(left: Path, out: Path) -> None:
    """Move the ``other`` entries an interrupted write had moved into ``left`` back into ``out``."""
    try:
        other = json.loads((left / MANIFEST).read_text(encoding="utf-8")).get("other", [])
    except (OSError, ValueError, AttributeError):
        return
    for name in other if isinstance(other, list) else []:
        if isinstance(name, str) and "/" not in name and (left / name).exists() and not (out / name).exists():
            os.rename(left / name, out / name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_folder(out: str | os.PathLike) -> list[str]:
    """Finish or undo what a killed :func:`write_folder` of ``out`` left, and remove its leftovers.

    If ``out`` itself is missing because an overwrite was killed between its two renames (the fallback
    path without ``renameat2``), the complete new folder is renamed into place, or else the old one back.
    Entries of the old folder a write was carrying over (its ``other``) are put back. Returns what was done,
    one line each. A leftover of a process still running is refused (:class:`FolderError`), not touched."""
    out = Path(os.path.abspath(out))
    left = _leftovers(out)
    busy = [(p, pid) for p, _, pid in left if _alive(pid)]
    if busy:
        raise FolderError(f"{out} is being written by process {busy[0][1]} ({busy[0][0].name} beside it); wait for "
                          f"it to finish, or remove {busy[0][0]} if no such process is saving there")
    done = []
    if not os.path.lexists(out) and any(role == "old" for _, role, _ in left):
        complete = [p for p, role, _ in left if role == "new" and _is_complete(p)]
        src = complete[0] if complete else next(p for p, role, _ in left if role == "old")
        os.rename(src, out)
        _fsync_dir(out.parent)
        done.append(f"{out}: restored the {'new' if complete else 'old'} folder of an interrupted save ({src.name})")
        left = [x for x in left if x[0] != src]
    for p, _, _ in left:
        if out.is_dir():
            _carried_back(p, out)
        _remove(p)
        done.append(f"{out}: removed {p.name}, left by an interrupted save")
    return done


def _is_complete(folder: Path) -> bool:
    try:
        return check_folder(folder, required=True) is not None
    except (FolderError, OSError):
        return False


def _staged_files(stage: Path) -> list[str]:
    files = []
    for path in sorted(stage.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise FolderError(f"{path}: not a regular file (a model folder holds plain files and folders)")
        if path.is_file():
            files.append(path.relative_to(stage).as_posix())
    return files


def _carried(out: Path, new_names: set[str]) -> list[str]:
    """Entries of the old ``out`` that are not part of any model (a run folder, the user's own files):
    they move into the new folder. Files of the old model (its manifest's, or any model-file name) do not."""
    if not out.is_dir():
        return []
    try:
        old = read_manifest(out)
    except FolderError:
        old = None
    old_unit = {rel.split("/")[0] for rel in old["files"]} if old else set()
    return sorted(p.name for p in out.iterdir() if p.name not in new_names and p.name not in old_unit
                  and not MODEL_FILES.fullmatch(p.name) and not _is_temp(p.name) and not _LEFTOVER.fullmatch(p.name))


def _swap(stage: Path, out: Path) -> None:
    """Put ``stage`` at ``out``; the old ``out`` ends at ``stage`` (exchange) or is removed (fallback)."""
    if _exchange(stage, out):
        return
    aside = out.parent / f".{out.name}.kexue-old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(out, aside)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(aside, out)
        raise
    _fsync_dir(out.parent)
    _remove(aside)


def _commit(stage: Path, out: Path, info: dict) -> None:
    files = {}
    for rel in _staged_files(stage):
        size, digest = _digest(stage / rel, sync=True)
        files[rel] = {"size": size, "sha256": digest}
    for d in sorted({(stage / rel).parent for rel in files} | {stage}, key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    other = _carried(out, {rel.split("/")[0] for rel in files})
    write_json(stage / MANIFEST, {"format": FOLDER_FORMAT, "version": FOLDER_VERSION, **info, "files": files,
                                  "other": other})
    _fsync_dir(stage)
    read_manifest(stage)  # the manifest as any reader will see it
    moved: list[str] = []
    try:
        for name in other:
            os.rename(out / name, stage / name)
            moved.append(name)
        if os.path.lexists(out):
            _swap(stage, out)
        else:
            os.rename(stage, out)
    except BaseException:
        for name in moved:  # the swap did not happen: the old folder gets its entries back
            if (stage / name).exists() and not (out / name).exists():
                os.rename(stage / name, out / name)
        raise
    _fsync_dir(out.parent)


@contextmanager
def write_folder(out: str | os.PathLike, info: dict[str, Any], *, overwrite: bool = False) -> Iterator[Path]:
    """Write the folder ``out`` as one unit: ``with write_folder(out, folder_info("encoder")) as tmp: ...``
    writes the files into ``tmp``, a fresh staging folder beside ``out`` (same filesystem); when the block
    ends without an exception every file and folder is fsynced, ``manifest.json`` (``info`` + every file's
    size and sha256) is written last, and the staging folder is swapped in for ``out`` by one
    ``renameat2(RENAME_EXCHANGE)`` (elsewhere: old folder renamed aside, new one renamed in, old removed,
    with :func:`recover_folder` finishing the job after a crash between the two renames).

    Guarantees: until the swap ``out`` is the old folder, complete; after it, the new one, complete; a killed
    or failed write never leaves a mix, and its leftovers are removed (or finished) by the next write of
    ``out``. An exception in the block removes the staging folder and leaves ``out`` as it was.
    Entries of the old folder that are no part of any model (a run folder such as ``train/``, the user's
    own files) are carried into the new folder and recorded as the manifest's ``other``.
    ``overwrite=False`` refuses an ``out`` that already holds a model (:func:`holds_model`).
    Not for two processes writing the same ``out`` at once (the second is refused while the first runs)."""
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        out = out.resolve()
    if out.exists() and not out.is_dir():
        raise FolderError(f"{out} is a file, not a folder")
    if out == Path(out.anchor) or Path.cwd().resolve().is_relative_to(out.resolve() if out.exists() else out):
        raise FolderError(f"{out} is the current folder or holds it; a model folder is replaced as a whole, so it "
                          "needs a folder of its own")
    info = folder_info(**{k: info.get(k) for k in ("kind", "task", "labels", "pooling", "post_processing",
                                                   "task_module")})
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(out)
    if not overwrite and holds_model(out):
        raise FolderError(f"{out} already holds a model; pass overwrite=True (--overwrite) to replace it")
    stage = out.parent / f".{out.name}.kexue-new-{os.getpid()}-{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
        _commit(stage, out, info)
    finally:
        if os.path.lexists(stage):  # a failed write, or the old folder after an exchange
            _remove(stage)
