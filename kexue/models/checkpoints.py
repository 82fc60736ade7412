"""Checkpoint files in the Hugging Face layout: ``config.json`` + ``model.safetensors`` or
``pytorch_model.bin`` (read with ``weights_only=True``), or their sharded ``*.index.json`` form.

Names and shapes are the family's weight map's business (:mod:`kexue.models.weights`); this module
only reads and writes files. Loading is strict by default: weights the model needs but the file
lacks (*missing*), weights the file has but nothing uses (*unexpected*) and shape mismatches are
all reported by name in one :class:`CheckpointError`. Heads a checkpoint may carry for other tasks
(pooler, MLM, NSP) are skipped quietly when the model was built without them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from kexue.io import atomic_write, save_safetensors, write_json
from kexue.models.weights import CheckpointError, LoadReport, load_state

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_state_dict", "save_pretrained", "weight_files"]

INDEX = {"safetensors": "model.safetensors.index.json", "bin": "pytorch_model.bin.index.json"}
SINGLE = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}


def weight_files(path: str | Path) -> list[Path]:
    """The weight file(s) of a checkpoint folder (or the file itself), safetensors preferred."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    for fmt in ("safetensors", "bin"):
        for name in (SINGLE[fmt], INDEX[fmt]):
            if not (path / name).exists():
                continue
            if name == SINGLE[fmt]:
                return [path / name]
            try:
                shards = json.loads((path / name).read_text())["weight_map"].values()
            except (json.JSONDecodeError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{path / name} is not a valid shard index: {e!r}") from None
            files = [path / s for s in sorted(set(shards))]
            absent = [str(f) for f in files if not f.exists()]
            if absent:
                raise CheckpointError(f"{path / name} lists shards that do not exist: {absent}")
            return files
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin (nor a shard index)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Copy an HF-layout checkpoint into ``model``; raise :class:`CheckpointError` if it does not fit."""
    return load_state(model, read_state_dict(path), strict=strict, source=str(path))


def load_checkpoint_except(model: nn.Module, path: str | Path, may_miss: str,
                           fresh: str = "missing parts start from scratch") -> LoadReport:
    """Load a pretrained checkpoint under a recipe's extra parts: only parameters whose name matches the regex
    ``may_miss`` (a pooler, an MLM head, Conditional-LN projections) may be absent; they keep their fresh
    initialisation and one printed line says so (``fresh``). Anything else missing, and any shape mismatch,
    raises :class:`CheckpointError` naming it: a checkpoint never silently half-loads."""
    report = load_checkpoint(model, path, strict=False)
    fatal = report.mismatched + [m for m in report.missing if not re.search(may_miss, m)]
    if fatal:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: {', '.join(fatal)}")
    if not report.ok:
        print(f"checkpoint {path}: {report} ({fresh})")
    return report


def parse_size(size: int | str) -> int:
    """``5_000_000``, ``"200KB"``, ``"5MB"``, ``"2GB"`` (decimal units, as transformers) -> bytes."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", str(size), re.IGNORECASE)
        if not m:
            raise ValueError(f"max_shard_size {size!r} is not a size like 5000000, '500KB', '5MB' or '2GB'")
        unit = (m.group(2) or "B").upper()
        scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
        value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _shards(tensors: dict[str, torch.Tensor], limit: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if limit is not None and shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def save_pretrained(model: nn.Module, directory: str | Path, tokenizer=None, safe_serialization: bool = True,
                    max_shard_size: int | str | None = None) -> Path:
    """Write ``config.json`` (HF fields + the ``"kexue"`` block) and the weights in the HF layout, so
    ``transformers`` and ``build_model(checkpoint=directory)`` load them back.

    ``safe_serialization=False`` writes ``pytorch_model.bin``; ``max_shard_size`` (bytes or "5MB")
    splits the weights into shards listed by ``*.index.json``. Every file is written atomically;
    weight files of another layout left by an earlier save are removed afterwards.
    """
    from kexue.models.family import hf_config

    transformed = next((type(m).__name__ for m in model.modules() if type(m).__module__ == "kexue.tools.quantize"
                        or type(m).__module__.startswith("torch.ao.nn")), None)
    if transformed is not None:  # its weights have no HF layout (int8 buffers, transposed matrices)
        raise ValueError(f"save_pretrained: the model holds {transformed} layers from kexue.tools.quantize, an "
                         "inference-only transform; save the fp32 model it was made from")
    directory = Path(directory)
    fmt = "safetensors" if safe_serialization else "bin"
    tensors = model.weight_map().to_hf()
    shards = _shards(tensors, parse_size(max_shard_size) if max_shard_size is not None else None)
    written: list[str] = []
    if len(shards) == 1:
        names = [SINGLE[fmt]]
    else:
        stem, ext = SINGLE[fmt].rsplit(".", 1)
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        if fmt == "safetensors":
            save_safetensors(shard, directory / name)
        else:
            flat = {k: v.detach().contiguous().clone() for k, v in shard.items()}
            atomic_write(directory / name, lambda tmp, flat=flat: torch.save(flat, tmp))
        written.append(name)
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        write_json(directory / INDEX[fmt], index)
        written.append(INDEX[fmt])
    write_json(directory / "config.json", hf_config(model))
    stale = [p for p in directory.iterdir() if p.name not in written and (
        p.name in SINGLE.values() or p.name in INDEX.values()
        or re.fullmatch(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)", p.name))]
    for p in stale:
        p.unlink()
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
