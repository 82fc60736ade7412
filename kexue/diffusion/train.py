"""Diffusion training on :func:`kexue.train.fit`: AdamW + warm-up + grad clipping + EMA weights, and the
trained model saved as safetensors + JSON (no pickle), one model folder written as a unit with its
``manifest.json`` (kind ``diffusion``, :func:`kexue.io.write_folder`) and checked when read back.

θ_ema ← λ θ_ema + (1 - λ) θ after every step, λ = min(decay, (1 + n) / (10 + n)) at update n (the EMA
weights are what gets sampled; they are far smoother than the last iterate, which matters a lot for
diffusion models; the short ramp keeps the early average from sticking to the initialisation).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kexue.data.batching import RandomBatches
from kexue.io import FolderError, check_folder, check_type, folder_info, read_json, safetensors_header, save_safetensors, \
    write_folder, write_json
from kexue.optim.ema import EMA
from kexue.optim.preset import adamw_preset
from kexue.train.loop import fit

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
CONFIG_KEYS = {"kind", "channels", "width", "size", "method", "train_steps", "data"}


class RampedEMA(EMA):
    """:class:`EMA` whose decay is ``min(decay, (1 + n) / (10 + n))`` at its n-th update."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, decay)
        self.max_decay = decay

    def update(self, model: nn.Module) -> None:
        self.decay = min(self.max_decay, (1 + self.num_updates) / (10 + self.num_updates))
        super().update(model)


def train(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], data: torch.Tensor,
          steps: int, batch_size: int = 128, lr: float = 1e-3, ema_decay: float = 0.995,
          warmup: int = 100, seed: int = 0, progress: bool = True, **fit_options) -> nn.Module:
    """Train ``model`` on random batches of ``data`` with ``loss_fn(model, batch)``; returns the EMA model.

    ``fit_options`` go to :func:`kexue.train.fit` (``checkpoint_dir``, ``checkpoint_every``, ``resume``,
    ``overwrite``, ``grad_accum``, ``bf16``, ``on_nonfinite``, ``max_seconds``, ``settings`` ...)."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup}")
    ema = RampedEMA(model, ema_decay)
    # lr·min(1, (i + 1) / warmup), no weight decay, clipping at 1
    preset = adamw_preset(model.parameters(), lr, steps, warmup=warmup, weight_decay=0.0, schedule="constant",
                          clip_norm=1.0)
    options = preset.fit_options(fit_options.pop("settings", None))
    fit(model, loss_fn, RandomBatches(data, batch_size, steps), steps=steps, ema=ema, progress=progress, desc="train",
        seed=seed, **options, **fit_options)
    averaged = copy.deepcopy(model).eval().requires_grad_(False)
    ema.copy_to(averaged)
    return averaged


def save_model(model: nn.Module, directory: str | Path, *, files: dict[str, Callable[[Path], object]] | None = None,
               **config) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``kind``, ``channels``, ``width`` and the other
    :data:`CONFIG_KEYS`), and ``files`` (name -> a function writing that path, e.g. the samples' PNG), as one
    model folder (:func:`kexue.io.write_folder`: complete or not there, never half); what else ``directory``
    holds (the run folders ``train/``) stays. :func:`load_model` reads it back."""
    unknown = set(config) - CONFIG_KEYS
    missing = {"kind", "channels", "width"} - set(config)
    if unknown or missing:
        raise ValueError(f"diffusion model config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; --save takes a folder")
    with write_folder(directory, folder_info("diffusion"), overwrite=True) as stage:
        save_safetensors(model.state_dict(), stage / MODEL_FILE)
        write_json(stage / CONFIG_FILE, config)
        for name, write in (files or {}).items():
            write(stage / name)
    return directory


CONFIG_TYPES = {"kind": "string", "channels": "integer", "width": "integer", "size": "integer", "method": "string",
                "train_steps": "integer", "data": "string"}


def load_model(directory: str | Path) -> tuple[nn.Module, dict]:
    """The model :func:`save_model` wrote (eval mode) and its config; the folder is checked first (its
    manifest's sizes and hashes, typed config fields, the weights file whole) and every weight must match."""
    from kexue.diffusion.methods import build  # methods imports this module

    directory = Path(directory)
    manifest = check_folder(directory)
    if manifest is not None and manifest["kind"] != "diffusion":
        raise FolderError(f"{directory / 'manifest.json'}: field 'kind' is {manifest['kind']!r}: not a diffusion "
                          "model folder (kexue.load reads the others)")
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a folder written by kexue diffusion --save")
    config = check_type(read_json(directory / CONFIG_FILE), "object", directory / CONFIG_FILE, "(top level)")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{directory / CONFIG_FILE}: unknown keys {sorted(unknown)}")
    for key, spec in CONFIG_TYPES.items():
        if key in config or key in ("kind", "channels", "width"):
            check_type(config.get(key), spec, directory / CONFIG_FILE, key)
    safetensors_header(directory / MODEL_FILE)
    from safetensors.torch import load_file

    model = build(config["kind"], config["channels"], config["width"])
    state = load_file(str(directory / MODEL_FILE))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{directory / MODEL_FILE} does not fit a {config['kind']} model of width {config['width']}: "
                         f"missing {missing}, unexpected {unexpected}, mis-shaped {sorted(shapes)}")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), config
