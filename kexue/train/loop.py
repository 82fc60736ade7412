"""One training engine: a small Keras-like loop with exact resume, safe run folders and torchrun/DDP.

``fit(model, loss_fn, batches, optimizer=...)`` runs ``loss_fn(model, batch)`` over the batches,
``grad_accum`` micro-batches per optimizer step ("让Keras更酷一些!": gradient accumulation, weight EMA):

    step:  for each of k micro-batches: (loss_fn(model, b) / k).backward()   # no DDP sync but the last
           g = clip_grad_norm_(clip_norm); non-finite loss or g -> stop (or skip the step)
           optimizer.step(); scheduler.step(); ema.update(model)

``loss_fn`` returns a scalar tensor, or a dict with the scalar under ``"loss"`` and other numbers to
log (e.g. the parts of a summed loss), each recorded in the history under its key.

``batches`` is any of: a sized iterable re-iterated every epoch (list, DataLoader — its
``sampler.set_epoch(epoch)`` is called if present), or a callable ``batches(epoch) -> iterable``.
Iterating it must be reproducible given the RNG state at the epoch's start (true for lists,
DataLoaders with ``shuffle=True``, and code drawing from the global RNGs): resume rebuilds the
epoch's iterator from that saved state and skips the batches already consumed, then restores the
current RNG.

**Run folder** (``checkpoint_dir``): ``settings.json`` records every setting that changes the result
(steps, optimizer and its hyper-parameters, schedule, grad_accum, clipping, EMA, bf16, seed, data
fingerprint, plus the caller's ``settings``); ``state.safetensors`` (atomic, :mod:`kexue.train.state`)
holds model, optimizer, scheduler, EMA, RNG, data position and history, so a run killed with
``kill -9`` and restarted with the same arguments ends with the same weights as an uninterrupted one;
``model.safetensors`` holds the final plain weights (the EMA ones if ``ema``). Rerunning into a folder
whose settings differ is refused with the list of differences, unless ``resume=True`` (continue from
the checkpoint with the new settings: the schedule is re-planned, e.g. more ``steps``) or
``overwrite=True`` (start over). Stale temp files of killed writes are removed at start.

**Non-finite guard**: a non-finite loss or gradient norm stops the run with an error naming the
step (``on_nonfinite="stop"``) before anything is applied or saved, so the last checkpoint stays the
last good one; ``on_nonfinite="skip"`` drops that update instead (the step still counts, the
schedule moves on) and reports the skipped steps (``history["skipped"]``). A checkpoint is never
written from non-finite weights.

**bf16**: ``bf16="auto"`` autocasts to bfloat16 only where the hardware computes it natively
as :func:`kexue.hardware.native_bf16` decides (CUDA with bf16, or a CPU with ``avx512_bf16``, or
``amx_bf16`` with ``amx_tile``); CPUs without them emulate bf16 slower than fp32, so ``auto`` keeps
fp32 there and ``bf16=True`` is refused.

**fp16** (``fp16=True``, CUDA only): PyTorch's AMP recipe — float16 autocast, ``scaler.scale(loss).backward()``,
``scaler.unscale_`` before clipping and the norm, ``scaler.step`` / ``update``. An overflow (finite loss,
non-finite gradient norm) is skipped by the scaler, not an error: the step counts, the EMA is not updated,
``history["overflow"]`` lists it; the scaler's state is checkpointed. Refused on a CPU (use bf16) and with bf16.
**TensorBoard** (``log_dir=``): :mod:`kexue.train.tensorboard` (rank 0; a resumed run shows each step once).

Multi-process: launch with ``torchrun --nproc_per_node N script.py``; ``fit`` initialises the
process group from the environment (gloo on CPU, nccl on GPU), wraps the model in DDP and, with
``shard_batches=True``, gives each rank its slice of every (global) batch, so the global batch
size and the results do not depend on the number of processes.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from kexue.hardware import native_bf16
from kexue.io import fingerprint, save_safetensors
from kexue.optim.ema import EMA
from kexue.train.adversarial import Adversarial
from kexue.train.tensorboard import TensorBoardLog, require_tensorboard
from kexue.train.state import SettingsMismatch, check_run, get_rng_state, jsonable, load_state, save_state, set_rng_state, start_run

Batch = Any
STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"


class NonFiniteError(ValueError):
    """A non-finite loss, gradient or weight; the message names the step and the checkpoint kept."""


class FitState:
    """What callbacks see: ``model`` (unwrapped), ``step``, ``epoch``, ``history``, ``ema``, ``rank``.
    A callback sets ``stop = True`` to end the run after this evaluation (early stopping): the run is
    checkpointed as finished, and rerunning it (same settings) trains no further."""

    def __init__(self, model: nn.Module, ema: EMA | None, rank: int):
        self.model, self.ema, self.rank = model, ema, rank
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches consumed in the current epoch
        self.stop = False
        self.history: dict[str, list] = {"step": [], "loss": [], "lr": [], "grad_norm": [], "eval": [], "skipped": []}


def init_distributed() -> tuple[int, int]:
    """Join the ``torchrun`` process group if the environment describes one; (rank, world)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _is_leaf_list(batch) -> bool:
    return isinstance(batch, list) and bool(batch) and \
        all(not isinstance(v, (torch.Tensor, dict, list, tuple)) for v in batch)


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's contiguous slice along dim 0 of every tensor in a (nested) batch. Anything else (a
    plain list of texts or indices) is left whole: every rank computes it, which gives the one-process
    result without the speed-up (pass per-rank batches and ``shard_batches=False`` for that)."""
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
    if _is_leaf_list(batch):
        return len(batch)
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


def resolve_bf16(bf16: bool | str, device: torch.device) -> bool:
    """``True`` / ``False`` / ``"auto"`` -> whether to autocast to bf16 on ``device``: the native-bf16 rule
    is :func:`kexue.hardware.native_bf16`'s (see the module doc there)."""
    if bf16 == "auto":
        return native_bf16(device)
    if bf16 is True:
        if not native_bf16(device):
            raise ValueError(f"bf16=True: {device.type} here has no native bfloat16 (on CPUs: neither avx512_bf16 "
                             "nor amx_bf16 with amx_tile), so bf16 would be emulated, slower than fp32; use "
                             "bf16='auto' (fp32 here) or bf16=False")
        return True
    if bf16 is False:
        return False
    raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")


def _describe_scheduler(scheduler) -> Any:
    if scheduler is None:
        return None
    volatile = {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "verbose", "base_lrs",
                "_is_initial"}
    state = {k: v for k, v in scheduler.state_dict().items() if k not in volatile}
    if "lr_lambdas" in state:  # callable objects are recorded by their settings, functions by name
        state["lr_lambdas"] = [d if d is not None else jsonable(f)
                               for d, f in zip(state["lr_lambdas"], scheduler.lr_lambdas)]
    return {"class": type(scheduler).__name__, **jsonable(state)}


def _describe_optimizer(optimizer: torch.optim.Optimizer) -> dict:
    groups = []
    for g in optimizer.param_groups:
        hp = {k: v for k, v in g.items() if k not in ("params", "initial_lr")}
        hp["lr"] = g.get("initial_lr", g["lr"])  # before a scheduler scaled it
        hp["parameters"] = sum(p.numel() for p in g["params"])
        groups.append(jsonable(hp))
    return {"class": type(optimizer).__name__, **(groups[0] if len(groups) == 1 else {"param_groups": groups})}


def _data_fingerprint(batches) -> str | None:
    """Fingerprint of a list of batches or of a DataLoader's dataset; None when it cannot be read
    without running user code (a callable): callers then pass their own ``settings={"data": ...}``."""
    data = getattr(batches, "dataset", batches)
    if isinstance(data, torch.utils.data.TensorDataset):
        data = list(data.tensors)
    if not isinstance(data, (list, tuple, torch.Tensor)):
        return None
    try:
        return fingerprint(data)
    except TypeError:
        return None


def _finite(t: torch.Tensor | float) -> bool:
    return bool(torch.isfinite(torch.as_tensor(t)).all())


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor | dict], batches, *,
        optimizer: torch.optim.Optimizer, epochs: int = 1, steps: int | None = None, scheduler=None,
        ema: EMA | None = None, grad_accum: int = 1, clip_norm: float | None = None,
        bf16: bool | Literal["auto"] = False, callbacks: Sequence[Callable[[FitState], dict | None]] = (),
        eval_every: int | None = None, checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None, resume: bool = False, overwrite: bool = False,
        settings: dict | None = None, on_nonfinite: Literal["stop", "skip"] = "stop",
        max_seconds: float | None = None, progress: bool = True, desc: str = "fit", seed: int = 0,
        shard_batches: bool = True, wrap_ddp: bool = True,
        adversarial: Adversarial | None = None, state_objects: dict[str, Any] | None = None,
        fp16: bool = False, log_dir: str | Path | None = None, fp16_device: str | None = None) -> dict[str, list]:
    """Train; returns the history ``{"step", "loss", "lr", "grad_norm", "eval", "skipped"}`` (+ the extra keys
    of a dict-returning ``loss_fn``, + ``"overflow"`` under fp16); ``lr`` is the learning rate each step used,
    ``grad_norm`` the gradient norm before clipping, ``eval`` the callbacks' dicts with their step, ``skipped``
    the steps dropped by ``on_nonfinite="skip"``, ``overflow`` the fp16 steps the gradient scaler skipped.

    ``steps`` (optimizer updates) overrides ``epochs`` when given. ``callbacks`` run every
    ``eval_every`` updates and at each epoch end, with the EMA weights swapped in when ``ema`` is
    given. ``max_seconds`` stops early after that much wall-clock time (checkpointed; the progress bar
    still shows the planned total). ``settings``: extra JSON-able settings to record and compare in
    the run folder (e.g. a data fingerprint, model size). ``wrap_ddp=False`` leaves a multi-process
    model as given (e.g. already FSDP-wrapped). ``adversarial``: an object of
    :mod:`kexue.train.adversarial` (FGM, PGD, VAT, GradientPenalty) that runs each micro-batch's
    passes on the perturbed token-embedding table and restores it exactly. ``state_objects``: name ->
    an object with ``state_dict()`` / ``load_state_dict()`` (e.g. the best weights a callback keeps)
    saved in every checkpoint and restored on resume, so what callbacks keep resumes exactly too.
    A callback may set ``state.stop = True`` (:class:`FitState`) to end training early. ``fp16``: float16
    autocast with a gradient scaler on CUDA (module doc); ``fp16_device`` runs that same path on another
    device type (``"cpu"``: torch autocasts matmuls to float16 there too), for testing it without a GPU.
    ``log_dir``: TensorBoard event files of the run (:mod:`kexue.train.tensorboard`)."""
    for name, value in (("grad_accum", grad_accum), ("epochs", epochs), ("steps", steps),
                        ("checkpoint_every", checkpoint_every), ("eval_every", eval_every)):
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run or start it over, not both")
    if adversarial is not None and not isinstance(adversarial, Adversarial):
        raise ValueError(f"adversarial must be FGM, PGD, VAT or GradientPenalty (kexue.train.adversarial), "
                         f"got {type(adversarial).__name__}")
    if fp16 and adversarial is not None:
        raise ValueError("fp16 with adversarial training is not supported (its extra passes have their own backward)")
    if log_dir is not None:
        require_tensorboard()
    rank, world = init_distributed()
    raw = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if wrap_ddp and world > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        model = nn.parallel.DistributedDataParallel(model)
    device = next(raw.parameters()).device
    use_bf16 = resolve_bf16(bf16, device)
    if fp16 and use_bf16:
        raise ValueError("fp16 and bf16 exclude each other: pick one half precision")
    amp_device = fp16_device or device.type
    if fp16 and amp_device != "cuda" and fp16_device is None:
        raise ValueError(f"fp16=True needs a CUDA GPU: this model is on {device.type}, where float16 is "
                         "emulated; on a CPU use bf16 ('auto' picks it where the CPU computes it natively)")
    scaler = torch.amp.GradScaler(amp_device) if fp16 else None
    if bf16 == "auto" and not use_bf16 and rank == 0:
        print(f"{desc}: bf16='auto' trains in fp32: this {device.type} has no native bfloat16 (on CPUs: neither "
              "avx512_bf16 nor amx_bf16 with amx_tile), and emulated bf16 is slower than fp32", file=sys.stderr)
    state = FitState(raw, ema, rank)
    run = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ckpt = run / STATE_FILE if run is not None else None

    per_epoch = _micro_batches_per_epoch(batches, 0)
    steps_per_epoch = per_epoch // grad_accum if per_epoch is not None else None
    if steps_per_epoch == 0:
        raise ValueError(f"fit: an epoch has {per_epoch} batch{'' if per_epoch == 1 else 'es'}, fewer than grad_accum "
                         f"({grad_accum}): the data is empty or too small for one optimizer step")
    if steps is None:
        if steps_per_epoch is None:
            raise ValueError("batches has no len(): pass steps=")
        steps = epochs * steps_per_epoch

    changed: list[str] = []
    if run is not None:
        recorded = {"steps": steps, "grad_accum": grad_accum, "clip_norm": clip_norm, "bf16": use_bf16,
                    "seed": seed, "on_nonfinite": on_nonfinite, "optimizer": _describe_optimizer(optimizer),
                    "scheduler": _describe_scheduler(scheduler), "ema_decay": ema.decay if ema is not None else None,
                    "model": {"class": type(raw).__name__, "parameters": sum(p.numel() for p in raw.parameters())},
                    "batches_per_epoch": per_epoch, "data": _data_fingerprint(batches)}
        if adversarial is not None:
            recorded["adversarial"] = adversarial.settings()
        if fp16:
            recorded["fp16"] = True
        recorded.update(settings or {})
        changed = check_run(run, recorded, resume=resume, overwrite=overwrite, state_file=STATE_FILE)
        reshaped = [d for d in changed if d.startswith("model.")]
        if reshaped:
            raise SettingsMismatch(f"{desc}: resume continues the model in {run}, but this one differs "
                                   f"({'; '.join(reshaped)}); pass overwrite=True (--overwrite) to start over",
                                   reshaped)
        if world > 1:
            dist.barrier()  # every rank has read the old settings before rank 0 replaces them
        if rank == 0:
            start_run(run, recorded, overwrite=overwrite, run_files=(STATE_FILE, MODEL_FILE))
            if changed:
                print(f"{desc}: resuming {run} with changed settings: {'; '.join(changed)}", file=sys.stderr)
        if world > 1:
            dist.barrier()

    epoch_rng = current_rng = None
    last_saved = None
    if ckpt is not None and ckpt.exists():
        saved = load_state(ckpt)
        raw.load_state_dict(saved["model"])
        new_hparams = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(saved["optimizer"])
        new_decay = ema.decay if ema is not None else None
        if ema is not None and "ema" in saved:
            ema.load_state_dict(saved["ema"])
        state.step, state.epoch = saved["progress"]["step"], saved["progress"]["epoch"]
        state.batch_in_epoch = saved["progress"]["batch_in_epoch"]
        state.history = saved["history"]
        state.history.setdefault("skipped", [])
        state.history.setdefault("grad_norm", [])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        state.stop = bool(saved["progress"].get("stopped", False)) and not changed  # new settings: train on
        for name, obj in (state_objects or {}).items():
            if name in saved.get("objects", {}):
                obj.load_state_dict(saved["objects"][name])
        if changed:  # resume=True with new settings: the new hyper-parameters, the schedule re-planned
            for g, hp in zip(optimizer.param_groups, new_hparams):
                g.update(hp)
            if ema is not None:
                ema.decay = new_decay
            if scheduler is not None:
                with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": a replay
                    warnings.simplefilter("ignore")
                    for _ in range(state.step):
                        scheduler.step()
        elif scheduler is not None and "scheduler" in saved:
            scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        epoch_rng = saved["epoch_rng"]
        current_rng = saved["rng"] if epoch_rng is not None else None
        last_saved = state.step
    else:
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
    if fp16:
        state.history.setdefault("overflow", [])
    board = TensorBoardLog(log_dir, state.step) if log_dir is not None and rank == 0 else None

    def weights_finite() -> bool:
        return all(_finite(p) for p in raw.parameters()) and \
            (ema is None or all(_finite(t) for t in ema.shadow.values()))

    def save() -> None:
        nonlocal last_saved
        if ckpt is None:
            return
        if rank == 0:
            if not weights_finite():
                raise NonFiniteError(f"{desc}: the weights became non-finite by step {state.step}; not saving, "
                                     f"{_kept(run, last_saved)}")
            out = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(), "rng": get_rng_state(),
                   "epoch_rng": epoch_rng, "history": state.history,
                   "progress": {"step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
                                "stopped": state.stop}}
            if state_objects:
                out["objects"] = {name: obj.state_dict() for name, obj in state_objects.items()}
            if scheduler is not None:
                out["scheduler"] = scheduler.state_dict()
            if ema is not None:
                out["ema"] = ema.state_dict()
            if scaler is not None:
                out["scaler"] = scaler.state_dict()
            if board is not None:
                board.flush()  # everything up to this checkpoint is on disk before it is
            save_state(out, ckpt)
        last_saved = state.step
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
            if board is not None:
                board.eval(record)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=state.step, desc=desc, unit="step", dynamic_ncols=True)
    running, t0, seen = None, time.perf_counter(), 0
    autocast = torch.autocast(device_type=amp_device, dtype=torch.float16) if fp16 else \
        torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)
    params = [p for p in raw.parameters() if p.requires_grad]
    model.train()

    # the callbacks of the checkpoint's step already ran if their record is in its history: not twice
    evals = state.history["eval"]
    last_cb = state.step if last_saved is not None and evals and evals[-1].get("step") == state.step else -1

    def maybe_callbacks() -> None:
        nonlocal last_cb
        if last_cb != state.step:
            last_cb = state.step
            run_callbacks()

    def agree(flag: bool) -> bool:
        """The same decision on every rank (any rank's True wins)."""
        if world == 1:
            return flag
        t = torch.tensor([float(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    out_of_time = False
    while state.step < steps and not out_of_time and not state.stop:
        if epoch_rng is None:  # a fresh epoch: remember the RNG its iterator is built from
            epoch_rng, current_rng = get_rng_state(), None
            state.batch_in_epoch = 0
        set_rng_state(epoch_rng)
        iterator = iter(_epoch_iterable(batches, state.epoch))
        for _ in itertools.islice(iterator, state.batch_in_epoch):  # resume: replay the data position
            pass  # (data that shrank under resume=True simply ends this epoch)
        if current_rng is not None:
            set_rng_state(current_rng)
        while state.step < steps:
            micro = list(itertools.islice(iterator, grad_accum))
            if len(micro) < grad_accum:
                break  # epoch over; a last incomplete accumulation group is dropped
            total, logs, bad = 0.0, {}, None
            for i, b in enumerate(micro):
                if world > 1 and shard_batches:
                    b = shard(b, rank, world)
                    seen_n = (batch_size(b) or 0) * world
                else:
                    seen_n = batch_size(b) or 0
                sync = i == grad_accum - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
                with (contextlib.nullcontext() if sync else model.no_sync()):
                    if adversarial is not None:  # its probe passes, then its backward (kexue.train.adversarial)
                        out = adversarial.step(model, loss_fn, b, autocast=autocast, scale=1.0 / grad_accum)
                    else:
                        with autocast:
                            out = loss_fn(model, b)
                    loss = out["loss"] if isinstance(out, dict) else out
                    if adversarial is None:  # even when non-finite: DDP ranks must all reduce
                        (loss / grad_accum if scaler is None else scaler.scale(loss / grad_accum)).backward()
                value = loss.item()
                if not math.isfinite(value) and bad is None:
                    bad = f"loss ({value})"
                total += value / grad_accum
                if isinstance(out, dict):
                    for k, v in out.items():
                        if k != "loss":
                            logs[k] = logs.get(k, 0.0) + float(v) / grad_accum
                seen += seen_n
            if scaler is not None:
                scaler.unscale_(optimizer)  # clipping and the norm see the true gradients
            if clip_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
            else:
                # sparse gradients (e.g. nn.Embedding(sparse=True)) count through their stored values
                norm = torch.nn.utils.get_total_norm([p.grad.coalesce().values() if p.grad.is_sparse else p.grad
                                                      for p in params if p.grad is not None])
            overflow = scaler is not None and bad is None and not _finite(norm)  # the scaler skips this update
            if bad is None and not overflow and not _finite(norm):
                bad = f"gradient norm ({norm.item()})"
            skipped_now = agree(bad is not None)
            if skipped_now:
                where = f"step {state.step + 1} (epoch {state.epoch + 1}, micro-batches {state.batch_in_epoch + 1}" \
                        f"-{state.batch_in_epoch + grad_accum} of the epoch)"
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.update()  # after unscale_: the scale backs off when the gradients were not finite
                if on_nonfinite == "stop":
                    if bar is not None:
                        bar.close()
                    raise NonFiniteError(f"{desc}: non-finite {bad or 'loss or gradient on another rank'} at "
                                         f"{where}; stopped, {_kept(run, last_saved)}; lower the learning rate, "
                                         "set clip_norm, or pass on_nonfinite='skip' (--skip-nonfinite)")
                state.history["skipped"].append(state.step + 1)
                if bar is not None:
                    bar.write(f"{desc}: skipped {where}: non-finite {bad or 'loss or gradient on another rank'}")
            else:
                lr_used = optimizer.param_groups[0]["lr"]
                if scaler is not None:
                    scaler.step(optimizer)  # skipped by the scaler on overflow
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if overflow:
                    state.history["overflow"].append(state.step + 1)
                elif ema is not None:
                    ema.update(raw)
            if scheduler is not None:
                with warnings.catch_warnings():  # a skipped first step did not call optimizer.step()
                    warnings.simplefilter("ignore")
                    scheduler.step()
            state.step += 1
            state.batch_in_epoch += grad_accum
            if not skipped_now:
                state.history["step"].append(state.step)
                state.history["loss"].append(total)
                state.history["lr"].append(lr_used)
                state.history["grad_norm"].append(float(norm))
                for k, v in logs.items():
                    state.history.setdefault(k, []).append(v)
                if board is not None:
                    board.step(state.step, total, lr_used, float(norm), logs,
                               scaler.get_scale() if scaler is not None else None)
                running = total if running is None else 0.98 * running + 0.02 * total
            if bar is not None:
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                post = {"loss": f"{running:.4f}"} if running is not None else {}
                if seen:
                    post["samples/s"] = f"{seen / dt:.1f}"
                if state.history["skipped"]:
                    post["skipped"] = len(state.history["skipped"])
                if state.history.get("overflow"):
                    post["fp16 overflows"] = len(state.history["overflow"])
                bar.set_postfix(post)
            if eval_every and state.step % eval_every == 0:
                maybe_callbacks()
                if agree(state.stop):
                    state.stop = True
                    break
            if checkpoint_every and state.step % checkpoint_every == 0:
                save()
            if max_seconds is not None and agree(time.perf_counter() - t0 >= max_seconds):
                out_of_time = True
                break
        else:
            break  # steps reached inside the epoch
        if out_of_time or state.stop:
            break
        maybe_callbacks()  # epoch end
        state.stop = agree(state.stop)
        state.epoch += 1
        epoch_rng, current_rng = None, None
    maybe_callbacks()  # end of training
    if bar is not None:
        bar.close()
    if state.history["skipped"] and rank == 0:
        skipped = state.history["skipped"]
        print(f"{desc}: skipped {len(skipped)} of {state.step} steps with a non-finite loss or gradient "
              f"(steps {', '.join(map(str, skipped[:20]))}{', ...' if len(skipped) > 20 else ''})", file=sys.stderr)
    save()
    if board is not None:
        board.close()
    if run is not None and rank == 0:
        with (ema.swapped(raw) if ema is not None else contextlib.nullcontext()):
            weights = {k: v.detach().cpu() for k, v in raw.state_dict().items()}
        save_safetensors(weights, run / MODEL_FILE)
    return state.history


def _kept(run: Path | None, last_saved: int | None) -> str:
    if run is None:
        return "no checkpoint_dir, nothing saved"
    if last_saved is None:
        return f"no checkpoint written to {run} yet"
    return f"the last good checkpoint (step {last_saved}) in {run} is kept"
