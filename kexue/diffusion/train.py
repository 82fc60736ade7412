"""Diffusion training on :func:`kexue.train.fit`: AdamW + warm-up + grad clipping + EMA weights (the trained
model's folder: :mod:`kexue.diffusion.folder`).

θ_ema ← λ θ_ema + (1 - λ) θ after every step, λ = min(decay, (1 + n) / (10 + n)) at update n (the EMA
weights are what gets sampled; they are far smoother than the last iterate, which matters a lot for
diffusion models; the short ramp keeps the early average from sticking to the initialisation).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from kexue.data.batching import RandomBatches
from kexue.optim.ema import RampedEMA  # noqa: F401  (its home was here)
from kexue.optim.preset import adamw_preset
from kexue.train.loop import fit





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
