"""A small Keras-like training loop with exact resume and torchrun/DDP support.

``fit(model, loss_fn, batches, optimizer=...)`` runs ``loss_fn(model, batch) -> scalar`` over
the batches, ``grad_accum`` micro-batches per optimizer step:

    step:  for each of k micro-batches: (loss_fn(model, b) / k).backward()   # no DDP sync but the last
           clip_grad_norm_(clip_norm); optimizer.step(); scheduler.step(); ema.update(model)

``batches`` is any of: a sized iterable re-iterated every epoch (list, DataLoader — its
``sampler.set_epoch(epoch)`` is called if present), or a callable ``batches(epoch) -> iterable``.
Iterating it must be reproducible given the RNG state at the epoch's start (true for lists,
DataLoaders with ``shuffle=True``, and seeded generators): resume rebuilds the epoch's iterator
from that saved state and skips the batches already consumed, then restores the current RNG.

Checkpoints (``checkpoint_dir/state.safetensors``, atomic, see :mod:`kexue.trainstate`) hold model,
optimizer, scheduler, EMA, RNG, data position and history, so a run killed with ``kill -9`` and
restarted with the same arguments ends with the same weights as an uninterrupted one.
``checkpoint_dir/model.safetensors`` holds the final plain weights (the EMA ones if ``ema``).

Multi-process: launch with ``torchrun --nproc_per_node N script.py``; ``fit`` initialises the
process group from the environment (gloo on CPU, nccl on GPU), wraps the model in DDP and, with
``shard_batches=True``, gives each rank its slice of every (global) batch, so the global batch
size and the results do not depend on the number of processes.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from kexue.optim.ema import EMA
from kexue.trainstate import get_rng_state, load_state, save_state, set_rng_state

Batch = Any
STATE_FILE = "state.safetensors"


class FitState:
    """What callbacks see: ``model`` (unwrapped), ``step``, ``epoch``, ``history``, ``ema``, ``rank``."""

    def __init__(self, model: nn.Module, ema: EMA | None, rank: int):
        self.model, self.ema, self.rank = model, ema, rank
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches consumed in the current epoch
        self.history: dict[str, list] = {"step": [], "loss": [], "lr": [], "eval": []}


def init_distributed() -> tuple[int, int]:
    """Join the ``torchrun`` process group if the environment describes one; (rank, world)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's contiguous slice along dim 0 of every tensor in a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world:
            raise ValueError(f"batch of {batch.shape[0]} does not split over {world} processes")
        n = batch.shape[0] // world
        return batch[rank * n:(rank + 1) * n]
    if isinstance(batch, dict):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard(v, rank, world) for v in batch)
    return batch


def batch_size(batch: Batch) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = batch_size(v)
            if n is not None:
                return n
    return None


def _epoch_iterable(batches, epoch: int) -> Iterable:
    if callable(batches) and not hasattr(batches, "__iter__"):
        return batches(epoch)
    sampler = getattr(batches, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return batches


def _micro_batches_per_epoch(batches, epoch: int) -> int | None:
    try:
        return len(_epoch_iterable(batches, epoch))
    except TypeError:
        return None


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor], batches, *,
        optimizer: torch.optim.Optimizer, epochs: int = 1, steps: int | None = None, scheduler=None,
        ema: EMA | None = None, grad_accum: int = 1, clip_norm: float | None = None, bf16: bool = False,
        callbacks: Sequence[Callable[[FitState], dict | None]] = (), eval_every: int | None = None,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, resume: bool = True,
        progress: bool = True, seed: int = 0, shard_batches: bool = True,
        wrap_ddp: bool = True) -> dict[str, list]:
    """Train; returns the history ``{"step", "loss", "lr", "eval"}`` (``eval``: the callbacks'
    dicts with their step). ``steps`` (optimizer updates) overrides ``epochs`` when given;
    ``callbacks`` run every ``eval_every`` updates and at each epoch end, with the EMA weights
    swapped in when ``ema`` is given. ``wrap_ddp=False`` leaves a multi-process model as given
    (e.g. already FSDP-wrapped)."""
    if grad_accum < 1:
        raise ValueError("grad_accum must be >= 1")
    rank, world = init_distributed()
    raw = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if wrap_ddp and world > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        model = nn.parallel.DistributedDataParallel(model)
    device = next(raw.parameters()).device
    state = FitState(raw, ema, rank)
    ckpt = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir else None

    per_epoch = _micro_batches_per_epoch(batches, 0)
    steps_per_epoch = per_epoch // grad_accum if per_epoch is not None else None
    if steps is None:
        if steps_per_epoch is None:
            raise ValueError("batches has no len(): pass steps=")
        steps = epochs * steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(f"fewer batches ({per_epoch}) than grad_accum ({grad_accum})")

    epoch_rng = current_rng = None
    if ckpt is not None and resume and ckpt.exists():
        saved = load_state(ckpt)
        raw.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and "scheduler" in saved:
            scheduler.load_state_dict(saved["scheduler"])
        if ema is not None and "ema" in saved:
            ema.load_state_dict(saved["ema"])
        state.step, state.epoch = saved["progress"]["step"], saved["progress"]["epoch"]
        state.batch_in_epoch = saved["progress"]["batch_in_epoch"]
        state.history = saved["history"]
        set_rng_state(saved["rng"])
        epoch_rng = saved["epoch_rng"]
        current_rng = saved["rng"] if epoch_rng is not None else None
    else:
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    def save() -> None:
        if ckpt is None:
            return
        if rank == 0:
            out = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(), "rng": get_rng_state(),
                   "epoch_rng": epoch_rng, "history": state.history,
                   "progress": {"step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch}}
            if scheduler is not None:
                out["scheduler"] = scheduler.state_dict()
            if ema is not None:
                out["ema"] = ema.state_dict()
            save_state(out, ckpt)
        if world > 1:
            dist.barrier()

    def run_callbacks() -> None:
        if not callbacks:
            return
        was_training = raw.training
        raw.eval()
        with (ema.swapped(raw) if ema is not None else contextlib.nullcontext()), torch.no_grad():
            record: dict[str, Any] = {"step": state.step}
            for cb in callbacks:
                record.update(cb(state) or {})
        raw.train(was_training)
        if len(record) > 1:
            state.history["eval"].append(record)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=state.step, desc="fit", dynamic_ncols=True)
    running, t0, seen = None, time.perf_counter(), 0
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()

    last_cb = -1

    def maybe_callbacks() -> None:
        nonlocal last_cb
        if last_cb != state.step:
            last_cb = state.step
            run_callbacks()

    while state.step < steps:
        if epoch_rng is None:  # a fresh epoch: remember the RNG its iterator is built from
            epoch_rng, current_rng = get_rng_state(), None
            state.batch_in_epoch = 0
        set_rng_state(epoch_rng)
        iterator = iter(_epoch_iterable(batches, state.epoch))
        for _ in range(state.batch_in_epoch):  # resume: replay the data position
            next(iterator)
        if current_rng is not None:
            set_rng_state(current_rng)
        while state.step < steps:
            micro = list(itertools.islice(iterator, grad_accum))
            if len(micro) < grad_accum:
                break  # epoch over; a last incomplete accumulation group is dropped
            total = 0.0
            for i, b in enumerate(micro):
                if world > 1 and shard_batches:
                    b = shard(b, rank, world)
                sync = i == grad_accum - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
                with (contextlib.nullcontext() if sync else model.no_sync()):
                    with autocast:
                        loss = loss_fn(model, b)
                    (loss / grad_accum).backward()
                total += loss.item() / grad_accum
                seen += (batch_size(b) or 0) * world
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update(raw)
            state.step += 1
            state.batch_in_epoch += grad_accum
            state.history["step"].append(state.step)
            state.history["loss"].append(total)
            state.history["lr"].append(optimizer.param_groups[0]["lr"])
            running = total if running is None else 0.98 * running + 0.02 * total
            if bar is not None:
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", **({"samples/s": f"{seen / dt:.1f}"} if seen else {}))
            if eval_every and state.step % eval_every == 0:
                maybe_callbacks()
            if checkpoint_every and state.step % checkpoint_every == 0:
                save()
        else:
            break  # steps reached inside the epoch
        maybe_callbacks()  # epoch end
        state.epoch += 1
        epoch_rng, current_rng = None, None
    maybe_callbacks()  # end of training
    if bar is not None:
        bar.close()
    save()
    if checkpoint_dir is not None and rank == 0:
        from safetensors.torch import save_file
        with (ema.swapped(raw) if ema is not None else contextlib.nullcontext()):
            weights = {k: v.detach().cpu().clone().contiguous() for k, v in raw.state_dict().items()}
        tmp = Path(checkpoint_dir) / ".model.safetensors.tmp"
        save_file(weights, str(tmp))
        os.replace(tmp, Path(checkpoint_dir) / "model.safetensors")
    return state.history
