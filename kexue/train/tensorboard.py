"""TensorBoard event files from :func:`kexue.train.fit` (``log_dir=``), written with PyTorch's own
``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard`` package must be installed).

Scalars, each at the optimizer step it belongs to (the same numbers as fit's returned history):

    train/loss, train/<part>   the step's loss and the parts of a dict loss (history "loss", history[part])
    train/lr, train/grad_norm  the learning rate the step used, the gradient norm before clipping
    train/loss_scale           fp16 only: the gradient scaler's scale after the step
    eval/<name>                every number a callback returned (history "eval"), at its step

Only rank 0 writes under DDP. **Resume**: events are flushed to disk at every checkpoint and at the end; a
resumed run opens a new event file whose first record is a restart marker at the checkpoint's step + 1
(``SummaryWriter(purge_step=...)``), so TensorBoard (and its ``EventAccumulator``) drop whatever the
interrupted run logged after its last checkpoint and show each step once: the steps up to the checkpoint
from the first file, the retrained ones from the new file. A fresh run (``overwrite``, or a new run folder)
starts its marker at step 1, hiding older events in the same ``log_dir``: one ``log_dir`` per run.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any


def require_tensorboard(option: str = "fit(log_dir=...)") -> None:
    """Refuse ``option`` by name, with the install command, when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError as e:
        raise ImportError(f"{option}: TensorBoard logging needs the tensorboard package ({e}); install it with "
                          "`pip install tensorboard`") from None


class TensorBoardLog:
    """One run's writer: ``step(...)`` after each applied update, ``eval(record)`` after the callbacks,
    ``flush()`` at checkpoints, ``close()`` at the end."""

    def __init__(self, log_dir: str | Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1)

    def step(self, step: int, loss: float, lr: float, grad_norm: float, parts: dict[str, float],
             loss_scale: float | None = None) -> None:
        w = self.writer
        w.add_scalar("train/loss", loss, step)
        for k, v in parts.items():
            w.add_scalar(f"train/{k}", v, step)
        w.add_scalar("train/lr", lr, step)
        w.add_scalar("train/grad_norm", grad_norm, step)
        if loss_scale is not None:
            w.add_scalar("train/loss_scale", loss_scale, step)

    def eval(self, record: dict[str, Any]) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool):
                self.writer.add_scalar(f"eval/{k}", float(v), record["step"])

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["TensorBoardLog", "require_tensorboard"]
