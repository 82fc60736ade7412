"""Training-state checkpoints: any nested state (model / optimizer / scheduler / EMA state_dicts,
RNG states, data position) in ONE safetensors file, written atomically.

Tensors go into the safetensors body; the nesting (dicts with int keys, tuples, numbers,
strings) goes into the header metadata as JSON with tensors replaced by references. A file is
written to a temporary name in the same folder, fsynced and ``os.replace``-d over the old one,
so a process killed at any instant leaves either the previous or the new checkpoint, never a
torn one. Nothing is unpickled on load.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from kexue.io import atomic_write


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: tied / shared storages are not allowed in safetensors
        tensors[key] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if callable(obj):  # e.g. a callable default in param_groups: not state, rebuilt by the code
        return None
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return obj


def save_state(state: dict, path: str | Path) -> None:
    """Atomically write ``state`` (nested dict) to ``path`` (a .safetensors file)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(state, tensors))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"kexue_state": skeleton}))
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def load_state(path: str | Path) -> dict:
    """Inverse of :func:`save_state`."""
    with safe_open(str(path), framework="pt") as f:
        skeleton = json.loads(f.metadata()["kexue_state"])
    tensors = load_file(str(path))
    return _decode(skeleton, tensors)


def read_progress(path: str | Path) -> dict | None:
    """The ``progress`` entry (step, epoch, ...) of a :func:`save_state` checkpoint, read from its header
    alone (no tensor is loaded); ``None`` when there is no such file or entry."""
    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        skeleton = json.loads(f.metadata()["kexue_state"])
    for key, value in skeleton.get("__dict__", []) if isinstance(skeleton, dict) else []:
        if key == "progress":
            return _decode(value, {})
    return None


def get_rng_state() -> dict:
    """Every RNG a training step may draw from: torch CPU (+ CUDA), Python, NumPy."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# -- run folders: the settings a run was started with ------------------------------------------------
SETTINGS_FILE = "settings.json"
_ABSENT = "(absent)"


class SettingsMismatch(ValueError):
    """A run folder holds a run started with other settings; ``differences`` lists them."""

    def __init__(self, message: str, differences: list[str]):
        super().__init__(message)
        self.differences = differences


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values, so that settings compare the same before and after a round trip."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist() if x.numel() <= 16 else f"tensor{tuple(x.shape)}"
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if callable(x):
        return getattr(x, "__qualname__", type(x).__name__)
    return repr(x)


def diff_settings(old: Any, new: Any, path: str = "") -> list[str]:
    """``["lr: 0.001 -> 0.002", "optimizer.class: AdamW -> Lion", ...]`` (dotted paths into nested dicts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            out += diff_settings(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{path}.{k}" if path else k)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old and \
            any(isinstance(v, (dict, list)) for v in old):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in diff_settings(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {json.dumps(old, ensure_ascii=False)} -> {json.dumps(new, ensure_ascii=False)}"]


def read_settings(folder: str | Path) -> dict | None:
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def check_run(folder: str | Path, settings: dict, *, resume: bool = False, overwrite: bool = False,
              partial: bool = False, state_file: str = "state.safetensors") -> list[str]:
    """Refuse to train into ``folder`` when it holds a run with other settings.

    Returns the differences that ``resume=True`` accepts (empty when the settings match, the folder is
    new, or ``overwrite=True``); raises :class:`SettingsMismatch` naming each difference otherwise.
    ``partial=True`` compares only the keys of ``settings`` (an early check before other settings exist).
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run or start it over, not both")
    folder = Path(folder)
    if overwrite:
        return []
    new = jsonable(settings)
    old = read_settings(folder)
    if old is None:
        if (folder / state_file).exists() and not resume:
            raise SettingsMismatch(f"run folder {folder} holds a checkpoint but no {SETTINGS_FILE}: pass "
                                   "--resume / resume=True to continue it or --overwrite / overwrite=True "
                                   "to start over", ["settings: unknown"])
        return []
    if partial:
        old = {k: old.get(k, _ABSENT) for k in new}
    diffs = diff_settings(old, new)
    if diffs and not resume:
        raise SettingsMismatch(f"run folder {folder} holds a run with other settings ({'; '.join(diffs)}): pass "
                               "--resume / resume=True to continue it with these settings or --overwrite / "
                               "overwrite=True to start over", diffs)
    return diffs


def start_run(folder: str | Path, settings: dict, *, overwrite: bool = False,
              run_files: tuple[str, ...] = ("state.safetensors", "model.safetensors")) -> None:
    """Prepare ``folder`` for a run that passed :func:`check_run`: remove the temp files a killed write
    left behind, remove the old run's files if ``overwrite``, and record ``settings.json`` (atomic)."""
    from kexue.io import clean_stale_temp, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(folder)
    if overwrite:
        for name in (*run_files, SETTINGS_FILE):
            (folder / name).unlink(missing_ok=True)
    settings = jsonable(settings)
    if read_settings(folder) != settings:
        write_json(folder / SETTINGS_FILE, settings)
