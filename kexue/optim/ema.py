r"""Weight EMA — "让Keras更酷一些!": 权重滑动平均.

.. math:: \bar\theta_t = \mu\,\bar\theta_{t-1} + (1-\mu)\,\theta_t

Train with the raw weights, evaluate / export with the averaged ones: :meth:`EMA.swapped`
swaps the shadow weights into the model and back, so no second copy of the model is built.
Same arithmetic as ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(mu))``
whose first ``update_parameters`` call copies the weights (here: construction copies them).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's floating-point parameters (and, with
    ``buffers=True``, floating buffers such as BatchNorm statistics)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, buffers: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.buffers = buffers
        self.shadow = {k: t.detach().clone() for k, t in self._tensors(model)}
        self.num_updates = 0

    def _tensors(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        model = getattr(model, "module", model)  # unwrap DDP
        for k, p in model.named_parameters():
            if p.dtype.is_floating_point:
                yield k, p
        if self.buffers:
            for k, b in model.named_buffers():
                if b.dtype.is_floating_point:
                    yield k, b

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Call after every ``optimizer.step()``."""
        for k, p in self._tensors(model):
            self.shadow[k].lerp_(p.detach(), 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def _swap(self, model: nn.Module) -> None:
        for k, p in self._tensors(model):
            tmp = p.detach().clone()
            p.copy_(self.shadow[k])
            self.shadow[k].copy_(tmp)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        """``with ema.swapped(model): evaluate(model)`` — averaged weights inside, raw ones after."""
        self._swap(model)
        try:
            yield model
        finally:
            self._swap(model)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model with the averaged weights for good (e.g. before export)."""
        for k, p in self._tensors(model):
            p.copy_(self.shadow[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for k, t in state["shadow"].items():
            self.shadow[k].copy_(t)


class RampedEMA(EMA):
    """:class:`EMA` whose decay is ``min(decay, (1 + n) / (10 + n))`` at its n-th update (n = 0, 1, ...): the
    short ramp keeps the early average from sticking to the initialisation (the diffusion and multimodal
    trainers sample from these weights)."""

    def __init__(self, model: nn.Module, decay: float, buffers: bool = False):
        super().__init__(model, decay, buffers)
        self.max_decay = decay

    def update(self, model: nn.Module) -> None:
        self.decay = min(self.max_decay, (1 + self.num_updates) / (10 + self.num_updates))
        super().update(model)
