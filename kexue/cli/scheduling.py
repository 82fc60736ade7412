"""How ``kexue serve`` shares the model between requests: :class:`Batcher` (one forward pass over the inputs of
many requests) and :class:`GenerationEngine` (many generations in shared decoding steps).

Both are fair: a request's inputs are taken round-robin with the other requests', ``max_batch`` at a
time, so a 1-input request that arrives while a 5,000-input one runs joins the next batch instead of
waiting for the whole of it.

* :class:`Batcher`: requests that arrive within ``max_wait`` of each other (and have the same options)
  share one ``predictor.predict`` (or ``predictor.embed``) call of at most ``max_batch`` inputs, run in a
  worker thread; a larger request is cut into batches, interleaved one input per request per turn.
* :class:`GenerationEngine`: a :class:`kexue.generation.BatchDecoder` in a worker thread; each input of a
  request is one job (its predictor's :class:`~kexue.recipes.sampling.Decoding`), jobs join the decoding
  rows between steps, round-robin across requests, and every step's tokens go back to the request
  (streaming) as they are picked.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from kexue.generation import BatchDecoder, Job


# --------------------------------------------------------------------------------------------------
# One forward pass over many requests' inputs
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Request:
    kind: str  # "predict" or "embed"
    inputs: list
    options: dict
    future: asyncio.Future
    outputs: list = field(default_factory=list)
    next: int = 0  # the next input to schedule
    left: int = 0  # outputs still to come

    @property
    def key(self) -> str:
        return self.kind + json.dumps(self.options, sort_keys=True)


class Batcher:
    """Gathers the inputs of concurrent requests into ``predictor.predict`` / ``embed`` calls of at most
    ``max_batch`` inputs, taken round-robin across the requests (one input of each in turn)."""

    def __init__(self, predictor, max_batch: int = 64, max_wait: float = 0.0, workers: int = 1):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r}: must be an int >= 1")
        self.predictor, self.max_batch, self.max_wait, self.workers = predictor, max_batch, max_wait, workers
        self.running: set[asyncio.Task] = set()  # forward passes in flight (at most ``workers``)
        self.wake = asyncio.Event()  # set when a forward pass ends or a request arrives
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.active: deque[_Request] = deque()  # requests with inputs not yet scheduled, in turn order
        self.batches = 0  # model calls made (for /health)
        self.inputs_done = 0

    async def submit(self, inputs: list, options: dict | None = None, kind: str = "predict") -> list:
        """The outputs of ``inputs`` (checked here: a bad input fails its request alone): ``predict``'s dicts,
        or with ``kind="embed"`` one vector (a tensor row) per text."""
        check = self.predictor.check if kind == "predict" else self.predictor.check_text
        items = [check(x) for x in inputs]
        if not items:
            return []
        req = _Request(kind, items, options or {}, asyncio.get_running_loop().create_future(),
                       [None] * len(items), left=len(items))
        await self.queue.put(req)
        return await req.future

    def _drain(self) -> None:
        while not self.queue.empty():
            self.active.append(self.queue.get_nowait())

    def _take(self) -> list[tuple[_Request, int]]:
        """The next batch: requests sharing the first request's kind and options, one input each in turn."""
        while self.active and self.active[0].future.done():  # a client that went away
            self.active.popleft()
        if not self.active:
            return []
        key = self.active[0].key
        group = [r for r in self.active if r.key == key and not r.future.done()]
        picks: list[tuple[_Request, int]] = []
        while len(picks) < self.max_batch and any(r.next < len(r.inputs) for r in group):
            for r in group:
                if r.next < len(r.inputs) and len(picks) < self.max_batch:
                    picks.append((r, r.next))
                    r.next += 1
        self.active.rotate(-1)  # the next batch starts with the next request
        self.active = deque(r for r in self.active if r.next < len(r.inputs) and not r.future.done())
        return picks

    def _call(self, kind: str, options: dict, items: list) -> list:
        if kind == "embed":
            return list(self.predictor.embed(items))
        return self.predictor.predict(items, **options)

    async def run(self) -> None:
        """Take batches and run them, at most ``workers`` forward passes at a time (each in a worker thread:
        with ``workers=2`` a small request that arrives while a large batch runs starts at once on the
        second worker instead of waiting for it)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.active:
                self.active.append(await self.queue.get())
                await asyncio.sleep(0)  # requests already being read get into the queue and share this batch
                deadline = loop.time() + self.max_wait  # let others arrive to share the first batch
                while sum(len(r.inputs) for r in self.active) < self.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        self.active.append(await asyncio.wait_for(self.queue.get(), timeout))
                    except asyncio.TimeoutError:
                        break
            self._drain()
            if len(self.running) >= self.workers:
                await self._wait_for_room()
                continue
            picks = self._take()
            if picks:
                task = asyncio.create_task(self._run_batch(picks))
                self.running.add(task)
                task.add_done_callback(self._finished)
                if self.workers == 1:  # one pass at a time: the next batch is taken when this one ends
                    await asyncio.wait({task})

    def _finished(self, task: asyncio.Task) -> None:
        self.running.discard(task)
        self.wake.set()

    async def _wait_for_room(self) -> None:
        """Until a forward pass ends (or a request arrives, which only joins the queue until then)."""
        self.wake.clear()
        getter = asyncio.ensure_future(self.queue.get())
        waiter = asyncio.ensure_future(self.wake.wait())
        done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if getter in done:
            self.active.append(getter.result())
        else:
            getter.cancel()
            try:
                await getter
            except asyncio.CancelledError:
                pass
            else:  # it got a request just before being cancelled
                self.active.append(getter.result())

    async def _run_batch(self, picks: list[tuple[_Request, int]]) -> None:
        first = picks[0][0]
        try:
            outputs = await asyncio.to_thread(self._call, first.kind, first.options, [r.inputs[i] for r, i in picks])
            self.batches += 1
            self.inputs_done += len(picks)
        except Exception as e:  # noqa: BLE001 - the error goes back to every request of the batch
            for r, _ in picks:
                if not r.future.done():
                    r.future.set_exception(e)
                r.next = len(r.inputs)
            return
        for (r, i), out in zip(picks, outputs):
            r.outputs[i] = out
            r.left -= 1
            if r.left == 0 and not r.future.done():  # a client that went away has cancelled its future
                r.future.set_result(r.outputs)


# --------------------------------------------------------------------------------------------------
# Generation in shared decoding steps
# --------------------------------------------------------------------------------------------------
class Generation:
    """One input's decoding as seen by the event loop: ``updates`` gets ``None`` each time new tokens
    arrived; ``tokens`` / ``ended`` / ``done`` / ``error`` mirror the :class:`~kexue.generation.Job`."""

    def __init__(self, decoding, loop: asyncio.AbstractEventLoop):
        self.decoding, self.loop = decoding, loop
        self.updates: asyncio.Queue = asyncio.Queue()
        self.job: Job | None = None
        self.tokens: list[list[int]] = []
        self.ended: list[bool] = []
        self.done, self.error = False, None
        self.cancelled = False  # cancelled before the engine took it

    def _publish(self, tokens, ended, done, error) -> None:  # on the event loop
        self.tokens, self.ended, self.done, self.error = tokens, ended, done, error
        self.updates.put_nowait(None)

    async def wait(self) -> "Generation":
        while not self.done:
            await self.updates.get()
        if self.error is not None:
            raise self.error
        return self

    def finish_reasons(self) -> list[str]:
        return ["stop" if e else "length" for e in self.ended]


class GenerationEngine:
    """A :class:`~kexue.generation.BatchDecoder` of at most ``max_rows`` rows, stepped in a worker
    thread while any job is queued or decoding. ``submit(decodings, owner)`` queues one job per
    :class:`~kexue.recipes.sampling.Decoding`; the jobs of one ``owner`` (a request) are admitted
    round-robin with other owners' jobs."""

    def __init__(self, max_rows: int = 64):
        self.decoder = BatchDecoder(max_rows)
        self.inbox: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.lock = threading.Lock()
        self.jobs_done = 0

    @property
    def steps(self) -> int:
        return self.decoder.steps

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="kexue-generation", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.inbox.put(None)

    def submit(self, decodings: list, owner: Any) -> list[Generation]:
        loop = asyncio.get_running_loop()
        gens = [Generation(d, loop) for d in decodings]
        for g in gens:
            self.inbox.put(("submit", g, owner))
        return gens

    def cancel(self, gens: list[Generation]) -> None:
        for g in gens:
            if not g.done:
                self.inbox.put(("cancel", g, None))

    def _take_inbox(self, block: bool) -> None:
        while True:
            try:
                item = self.inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if item is None:
                return
            action, gen, owner = item
            if action == "cancel":
                if gen.job is not None:
                    gen.job.cancel()
                else:
                    gen.cancelled = True
                continue
            if gen.cancelled:
                continue
            d = gen.decoding
            try:
                gen.job = self.decoder.submit(d.state, d.options, d.eos_id, owner=owner, context=gen)
            except Exception as e:  # noqa: BLE001
                self._publish(gen, [], [], True, e)
                continue
            if gen.job.done:  # max_new_tokens=0
                self._publish(gen, gen.job.tokens, gen.job.ended, True, None)

    def _publish(self, gen: Generation, tokens, ended, done, error) -> None:
        if done:
            self.jobs_done += 1
        gen.loop.call_soon_threadsafe(gen._publish, [list(t) for t in tokens], list(ended), done, error)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self.stopping:
            self._take_inbox(block=not self.decoder.busy)
            if self.stopping:
                return
            if not self.decoder.busy:
                continue
            for job in self.decoder.step():
                self._publish(job.context, job.tokens, job.ended, job.done, job.error)


__all__ = ["Batcher", "Generation", "GenerationEngine"]
