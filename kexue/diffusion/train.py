"""The plain diffusion training loop: AdamW + warm-up + grad clipping + EMA weights (kexue.optim.EMA).

θ_ema ← λ θ_ema + (1 - λ) θ after every step (the EMA weights are what gets sampled; they are far smoother
than the last iterate, which matters a lot for diffusion models).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..optim.ema import EMA


def train(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], data: torch.Tensor,
          steps: int, batch_size: int = 128, lr: float = 1e-3, ema_decay: float = 0.995,
          warmup: int = 100, seed: int = 0, progress: bool = True) -> nn.Module:
    """Train ``model`` on random batches of ``data`` with ``loss_fn(model, batch)``; returns the EMA model."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ema = EMA(model, ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    bar = tqdm(range(steps), disable=not progress, desc="train", leave=False)
    model.train()
    for i in bar:
        batch = data[torch.randint(0, len(data), (batch_size,), generator=g)]
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.decay = min(ema_decay, (1 + i) / (10 + i))  # short warm-up so early EMA is not stuck at init
        ema.update(model)
        if i % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    averaged = copy.deepcopy(model).eval().requires_grad_(False)
    ema.copy_to(averaged)
    return averaged
