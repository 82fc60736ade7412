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
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(state, tensors))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"kexue_state": skeleton})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
