"""Diffusion training on :func:`kexue.train.fit`: AdamW + warm-up + grad clipping + EMA weights, and the
trained model saved as safetensors + JSON (no pickle).

θ_ema ← λ θ_ema + (1 - λ) θ after every step, λ = min(decay, (1 + n) / (10 + n)) at update n (the EMA
weights are what gets sampled; they are far smoother than the last iterate, which matters a lot for
diffusion models; the short ramp keeps the early average from sticking to the initialisation).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kexue.io import save_safetensors, write_json
from kexue.optim.ema import RampedEMA  # noqa: F401  (its home was here)
from kexue.optim.schedules import PiecewiseLinear, lambda_lr
from kexue.train.loop import fit

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
CONFIG_KEYS = {"kind", "channels", "width", "size", "method", "train_steps", "data"}


class RandomBatches:
    """``n`` batches of ``batch_size`` rows of ``dataset`` drawn with replacement from the global torch
    RNG (so :func:`kexue.train.fit` replays them exactly on resume)."""

    def __init__(self, dataset: torch.Tensor, batch_size: int, n: int):
        self.dataset, self.batch_size, self.n = dataset, batch_size, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.dataset[torch.randint(0, len(self.dataset), (self.batch_size,))]


def train(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], data: torch.Tensor,
          steps: int, batch_size: int = 128, lr: float = 1e-3, ema_decay: float = 0.995,
          warmup: int = 100, seed: int = 0, progress: bool = True, **fit_options) -> nn.Module:
    """Train ``model`` on random batches of ``data`` with ``loss_fn(model, batch)``; returns the EMA model.

    ``fit_options`` go to :func:`kexue.train.fit` (``checkpoint_dir``, ``checkpoint_every``, ``resume``,
    ``overwrite``, ``grad_accum``, ``bf16``, ``on_nonfinite``, ``max_seconds``, ``settings`` ...)."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup}")
    ema = RampedEMA(model, ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = lambda_lr(opt, PiecewiseLinear({0: 1.0 / warmup, warmup - 1: 1.0}))  # (i + 1) / warmup, then 1
    fit(model, loss_fn, RandomBatches(data, batch_size, steps), optimizer=opt, steps=steps, scheduler=sched,
        ema=ema, clip_norm=1.0, progress=progress, desc="train", seed=seed, **fit_options)
    averaged = copy.deepcopy(model).eval().requires_grad_(False)
    ema.copy_to(averaged)
    return averaged


def save_model(model: nn.Module, directory: str | Path, **config) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``kind``, ``channels``, ``width`` and the other
    :data:`CONFIG_KEYS`) into ``directory``, atomically; :func:`load_model` reads them back."""
    unknown = set(config) - CONFIG_KEYS
    missing = {"kind", "channels", "width"} - set(config)
    if unknown or missing:
        raise ValueError(f"diffusion model config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; --save takes a folder")
    save_safetensors(model.state_dict(), directory / MODEL_FILE)
    write_json(directory / CONFIG_FILE, config)
    return directory


def load_model(directory: str | Path) -> tuple[nn.Module, dict]:
    """The model :func:`save_model` wrote (eval mode) and its config; every weight must match."""
    from kexue.diffusion.methods import build  # methods imports this module

    directory = Path(directory)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a folder written by kexue diffusion --save")
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{directory / CONFIG_FILE}: unknown keys {sorted(unknown)}")
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
