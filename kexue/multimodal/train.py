"""Training a multimodal model on captioned images with :func:`kexue.train.fit`.

Each step draws ``batch_size`` images with replacement; each row is a text -> image sequence (flow loss on its
patches, next-token loss on its prompt) with probability ``generate_fraction``, else an image -> text one
(next-token loss on its caption). AdamW, warm-up then linear decay to 10 %, gradient clipping at 1, and
ramped EMA weights (:class:`kexue.optim.ema.RampedEMA`), which are the ones returned: sampling a flow from
averaged weights is much smoother than from the last iterate (as in :mod:`kexue.diffusion`).
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from kexue.optim.ema import RampedEMA
from kexue.optim.preset import adamw_preset
from kexue.train.loop import fit


class CaptionedBatches:
    """``n`` batches ``(indices, generate)`` drawn from the global torch RNG (so ``fit`` replays them on resume)."""

    def __init__(self, n_items: int, batch_size: int, n: int, generate_fraction: float):
        self.n_items, self.batch_size, self.n, self.fraction = n_items, batch_size, n, generate_fraction

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield torch.randint(0, self.n_items, (self.batch_size,)), torch.rand(self.batch_size) < self.fraction


def train_multimodal(model: nn.Module, images: torch.Tensor, captions: Sequence[list[int]],
                     loss: Callable[..., dict], steps: int, batch_size: int = 64, lr: float = 1e-3,
                     generate_fraction: float = 0.5, ema_decay: float = 0.995, warmup: int = 100, seed: int = 0,
                     progress: bool = True, **fit_options) -> tuple[nn.Module, dict]:
    """Train ``model`` on ``images [N, C, H, W]`` with ``captions[i]`` the token ids of image i's caption.
    ``loss(model, images, captions, generate) -> {"loss", ...}`` computes one batch (the flow model's
    :func:`kexue.multimodal.model.multimodal_loss` after :func:`~kexue.multimodal.model.training_batch`, or the
    VQ model's). Returns (the EMA model in eval mode, the training history of :func:`kexue.train.fit`)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not 0.0 < generate_fraction < 1.0:
        raise ValueError(f"generate_fraction must be in (0, 1), got {generate_fraction}")
    warmup = max(1, min(warmup, steps))
    ema = RampedEMA(model, ema_decay)
    # AdamW, warm-up, then linear decay to 10 % of lr at the last step, clipping at 1 (kexue.optim's one preset)
    preset = adamw_preset(model.parameters(), lr, steps, warmup=warmup, schedule="decay", final=0.1)

    def step(m: nn.Module, batch) -> dict:
        idx, generate = batch
        return loss(m, images[idx], [captions[i] for i in idx.tolist()], generate)

    history = fit(model, step, CaptionedBatches(len(images), batch_size, steps, generate_fraction), steps=steps,
                  ema=ema, progress=progress, desc="multimodal", seed=seed,
                  **preset.fit_options(fit_options.pop("settings", None)), **fit_options)
    averaged = copy.deepcopy(model).eval().requires_grad_(False)
    ema.copy_to(averaged)
    return averaged, history


__all__ = ["CaptionedBatches", "train_multimodal"]
