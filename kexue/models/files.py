"""Weight files in the Hugging Face layout, below every family: ``model.safetensors`` or
``pytorch_model.bin`` (read with ``weights_only=True``), or their sharded form listed by a
``*.index.json``.

This module reads and writes tensors by name and copies them into a model through its weight map
(:func:`kexue.models.weights.load_state`); it knows no family and imports none, so the model files and
the family registry (:mod:`kexue.models.family`) both sit above it. Loading is strict by default:
weights the model needs but the file lacks (*missing*), weights the file has but nothing uses
(*unexpected*) and shape mismatches are all reported by name in one :class:`CheckpointError`
(:func:`kexue.models.weights.check_fit`). Heads a checkpoint may carry for other tasks (pooler, MLM,
NSP) are skipped quietly when the model was built without them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from kexue.io import atomic_write, read_utf8, save_safetensors, write_json
from kexue.models.weights import CheckpointError, LoadReport, check_fit, load_state

INDEX = {"safetensors": "model.safetensors.index.json", "bin": "pytorch_model.bin.index.json"}
SINGLE = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}
SHARD = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")


def shard_index(path: str | Path) -> tuple[Path, dict[str, str]] | None:
    """``(index file, {tensor: shard file name})`` of a sharded checkpoint folder (None when the folder holds a
    single weight file, or no index); an index that is not JSON, not UTF-8 or not ``{"weight_map": {name:
    file}}`` is a :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_dir():
        return None
    for fmt in ("safetensors", "bin"):
        if (path / SINGLE[fmt]).exists():
            return None
        index = path / INDEX[fmt]
        if index.exists():
            try:
                weight_map = json.loads(read_utf8(index, CheckpointError))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is not a valid shard index: {e!r}") from None
            if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                           for k, v in weight_map.items()):
                raise CheckpointError(f"{index}: field 'weight_map' must map tensor names to shard file names")
            return index, weight_map
    return None


def weight_files(path: str | Path) -> list[Path]:
    """The weight file(s) of a checkpoint folder (or the file itself), safetensors preferred."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    for fmt in ("safetensors", "bin"):
        if (path / SINGLE[fmt]).exists():
            return [path / SINGLE[fmt]]
        if (path / INDEX[fmt]).exists():
            index, weight_map = shard_index(path)
            files = [path / s for s in sorted(set(weight_map.values()))]
            absent = [str(f) for f in files if not f.exists()]
            if absent:
                raise CheckpointError(f"{index} lists shards that do not exist: {absent}")
            return files
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin (nor a shard index)")


def read_state_dict(path: str | Path, origins: dict[str, Path] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (all shards) or weight file, by its stored name (``origins`` is
    filled with the file each came from). In a sharded checkpoint every shard holds exactly the tensors its
    index maps to it: a tensor the index maps elsewhere (or not at all), or one missing from its shard, is a
    :class:`CheckpointError` naming the shard and the tensor — never a silent pick of one copy."""
    index = shard_index(path)
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            tensors = load_file(str(f))
        else:
            tensors = torch.load(f, map_location="cpu", weights_only=True)
        if index is not None:
            name = index[0].name
            weight_map = {k: Path(v).as_posix() for k, v in index[1].items()}  # "./a" and "a" are one file
            shard = f.relative_to(Path(path)).as_posix()
            for key in tensors:
                if weight_map.get(key) != shard:
                    where = f"it maps it to {weight_map[key]}" if key in weight_map else "it does not list it"
                    raise CheckpointError(f"{f}: tensor {key!r} is not mapped to this shard by {name} ({where})")
            lacking = [key for key, s in weight_map.items() if s == shard and key not in tensors]
            if lacking:
                raise CheckpointError(f"{f}: no tensor {lacking[0]!r}, which {name} maps to this shard")
        if origins is not None:
            origins.update((key, f) for key in tensors)
        state.update(tensors)
    return state


def check_dtypes(model: nn.Module, state: dict[str, torch.Tensor], origins: dict[str, Path]) -> None:
    """A floating-point weight is never filled from an integer (or boolean) tensor — copying would cast it
    silently (an int32 ``1`` becoming ``1.0``): :class:`CheckpointError` naming the file and the tensor.
    Floating tensors of another precision (fp16, bf16) are read as usual."""
    wm = model.weight_map()
    own = model.state_dict()
    targets = {hf: names for hf, (names, _) in wm.plan.items()}
    targets.update({alias: targets[hf] for hf, alias in wm.aliases.items() if hf in targets})
    for key, t in state.items():
        if t.is_floating_point() or t.is_complex():
            continue
        floats = [n for n in targets.get(wm.short_name(key), []) if own[n].is_floating_point()]
        if floats:
            raise CheckpointError(f"{origins.get(key, 'checkpoint')}: tensor {key!r} is {str(t.dtype)[6:]}, but the "
                                  f"model's {floats[0]} is {str(own[floats[0]].dtype)[6:]}: integer weights are not cast "
                                  "into a float model (a quantized or wrongly saved checkpoint?)")


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Copy an HF-layout checkpoint into ``model``; raise :class:`CheckpointError` if it does not fit (by name,
    shape, or an integer tensor for a float weight: :func:`check_dtypes`)."""
    origins: dict[str, Path] = {}
    state = read_state_dict(path, origins)
    check_dtypes(model, state, origins)
    return load_state(model, state, strict=strict, source=str(path))


def load_checkpoint_except(model: nn.Module, path: str | Path, may_miss: str,
                           fresh: str = "missing parts start from scratch") -> LoadReport:
    """Load a pretrained checkpoint under a recipe's extra parts: only parameters whose name matches the regex
    ``may_miss`` (a pooler, an MLM head, Conditional-LN projections) may be absent; they keep their fresh
    initialisation and one printed line says so (``fresh``). Anything else missing, anything unexpected and
    any shape mismatch raises :class:`CheckpointError` naming it: a checkpoint never silently half-loads."""
    report = check_fit(load_checkpoint(model, path, strict=False), f"checkpoint {path}", type(model).__name__,
                       may_miss=may_miss)
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


def write_weights(tensors: dict[str, torch.Tensor], directory: str | Path, safe_serialization: bool = True,
                  max_shard_size: int | str | None = None) -> list[str]:
    """Write ``tensors`` into ``directory`` as ``model.safetensors`` (``safe_serialization=False``:
    ``pytorch_model.bin``), split into shards listed by ``*.index.json`` past ``max_shard_size`` (bytes
    or "5MB"). Every file is written atomically; the names written are returned."""
    directory = Path(directory)
    fmt = "safetensors" if safe_serialization else "bin"
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
    return written


def remove_stale_weights(directory: str | Path, written: list[str]) -> None:
    """Remove weight files of another layout (single / sharded, safetensors / bin) an earlier save left."""
    for p in Path(directory).iterdir():
        if p.name not in written and (p.name in SINGLE.values() or p.name in INDEX.values() or SHARD.fullmatch(p.name)):
            p.unlink()


__all__ = ["INDEX", "SINGLE", "check_dtypes", "load_checkpoint", "load_checkpoint_except", "parse_size", "read_state_dict",
           "remove_stale_weights", "shard_index", "weight_files", "write_weights"]
