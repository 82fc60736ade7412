"""Checkpoints in the Hugging Face layout: ``config.json`` + ``model.safetensors`` (or
``pytorch_model.bin``, read with ``weights_only=True``; sharded ``*.index.json`` too).

Loading is strict by default: weights the model needs but the file lacks (*missing*), weights the
file has but nothing uses (*unexpected*) and shape mismatches are all reported by name in one
:class:`CheckpointError`. Heads a checkpoint may carry for other tasks (pooler, MLM, NSP) are
skipped quietly when the model was built without them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from .io import save_safetensors, write_json
from .models.base import Transformer


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message names every offending weight."""


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if names:
                parts.append(f"{label} ({len(names)}): " + ", ".join(names))
        return "; ".join(parts) or "all weights matched"


def weight_files(path: str | Path) -> list[Path]:
    """The weight file(s) of a checkpoint folder (or the file itself), safetensors preferred."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).exists():
            shards = json.loads((path / index).read_text())["weight_map"].values()
            return [path / s for s in sorted(set(shards))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).exists():
            return [path / name]
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _canonical(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    # TF-era checkpoints call LayerNorm's parameters gamma / beta
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def load_checkpoint(model: Transformer, path: str | Path, strict: bool = True) -> LoadReport:
    """Copy an HF-layout checkpoint into ``model``; raise :class:`CheckpointError` if it does not fit."""
    state = {}
    for name, tensor in read_state_dict(path).items():
        state[_canonical(name, model.hf_prefix)] = tensor
    ours = model.hf_names()
    wanted = {hf: name for name, hf in ours.items()}
    own = model.state_dict()
    report = LoadReport()
    new_state = {}
    for hf, name in wanted.items():
        if hf not in state:
            if name not in model.tied_names():
                report.missing.append(hf)
            continue
        if state[hf].shape != own[name].shape:
            report.mismatched.append(f"{hf} checkpoint {list(state[hf].shape)} vs model {list(own[name].shape)}")
            continue
        new_state[name] = state[hf]
    quiet = model.hf_ignore + model.hf_optional
    for hf in state:
        if hf in wanted:
            continue
        (report.skipped if any(re.fullmatch(p, hf) for p in quiet) else report.unexpected).append(hf)
    if strict and not report.ok:
        hint = ""
        if any("word_embeddings" in m for m in report.mismatched):
            hint = " (config.vocab_size does not match the checkpoint's vocabulary)"
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}{hint}: {report}")
    model.load_state_dict(new_state, strict=False)
    return report


def save_pretrained(model: Transformer, directory: str | Path, tokenizer=None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that ``transformers`` (and kexue) load back.

    With an MLM head the file is laid out as ``<Family>ForMaskedLM`` (encoder names prefixed,
    e.g. ``bert.``); otherwise as the bare ``<Family>Model``. Each file is written atomically.
    """
    directory = Path(directory)
    prefix = model.hf_prefix if model.with_mlm else ""
    tensors = {}
    state = model.state_dict()
    extras = model.hf_extra_tensors() if hasattr(model, "hf_extra_tensors") else {}
    for name, hf in model.hf_names().items():
        tensors[hf if hf.startswith("cls.") else prefix + hf] = state[name]
    for hf, tensor in extras.items():
        tensors[prefix + hf] = tensor
    config = model.config.to_dict()
    config["architectures"] = [model.hf_architectures[1 if model.with_mlm else 0]]
    config["model_type"] = model.config.model_type
    save_safetensors(tensors, directory / "model.safetensors")
    write_json(directory / "config.json", config)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
