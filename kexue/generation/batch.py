"""Continuous batching: many requests share every decoding step, new requests join between steps.

    logits_{t+1}[rows of every active request] = step(one token per row)      (one batched forward pass)

A server decoding requests one after another leaves the model running on a single row at a time.
:class:`BatchDecoder` keeps the rows of every active request in one decoding state: a new request is
prefilled alone (its prompt in one forward pass), then its rows are merged
(:meth:`~kexue.generation.state.PrefixDecoding.merge`: histories left-padded, the padding masked) into
the rows already decoding, and from then on each step feeds one token per row of all of them at once;
a request that finished leaves the batch (``reorder`` keeps the other rows).

Each request keeps its own options and its own :class:`~kexue.generation.search.TokenPicker` (greedy or
sampling, with its own ``torch.Generator`` seeded by its ``seed``), so its tokens are the ones
:func:`~kexue.generation.search.greedy` / :func:`~kexue.generation.search.sample` give it decoded alone:
the same picks from the same logits, up to float rounding of the batched matmuls (a different token
only where two logits tie within ~1e-6). A request sampled without a seed draws from torch's global
generator, whose draws interleave with other such requests: reproducible only alone.

Admission is fair: requests wait in one queue per ``owner`` (a client request with many inputs is one
owner) and join round-robin across owners while fewer than ``max_rows`` rows decode, so one request of
many inputs does not hold back a small one. Beam search (``num_beams > 1``) is not decoded here (its
rows are reordered across the whole beam at every step); states that cannot merge (T5) decode in a
group of their own, still one step per round.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Hashable

import torch
from torch import Tensor

from kexue.generation.options import GenerationOptions
from kexue.generation.search import TokenPicker, check_args
from kexue.generation.state import DecodingState, PrefixDecoding


@dataclass(eq=False)
class Job:
    """One request's decoding in a :class:`BatchDecoder`: ``tokens[i]`` is row i's text so far (end token
    excluded), ``ended[i]`` whether row i stopped at its end token; ``done`` once no row goes on; ``error``
    the exception that stopped it (then ``done`` too). Rows are ``num_samples`` per input, grouped by input."""

    state: DecodingState
    options: GenerationOptions
    eos_id: int | None = None
    pad_id: int = 0
    owner: Hashable = None
    generator: torch.Generator | None = None
    tokens: list[list[int]] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    cancelled: bool = False
    steps: int = 0  # tokens picked per row so far
    context: Any = None  # the caller's own data
    picker: TokenPicker | None = None
    logits: Tensor | None = None

    @property
    def rows(self) -> int:
        return self.state.batch_size * self.options.num_samples

    def finish_reasons(self) -> list[str]:
        """Per row: ``"stop"`` (its end token) or ``"length"`` (``max_new_tokens``, or cancelled)."""
        return ["stop" if e else "length" for e in self.ended]

    def cancel(self) -> None:
        """Stop decoding this job at the next step (its rows leave the batch); ``done`` then."""
        self.cancelled = True


class _Group:
    """Jobs whose rows share one decoding state, in row order."""

    def __init__(self, job: Job):
        self.state, self.jobs = job.state, [job]


class BatchDecoder:
    """Decode many requests in shared steps (see the module docstring). Not thread-safe: one thread
    calls :meth:`submit`, :meth:`step` and :meth:`cancel` (a server wraps it in a worker thread)."""

    def __init__(self, max_rows: int = 64):
        if not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows={max_rows!r}: must be an int >= 1")
        self.max_rows = max_rows
        self.pending: OrderedDict[Hashable, deque[Job]] = OrderedDict()
        self.groups: list[_Group] = []
        self.steps = 0  # batched decoding steps run (one forward pass per group)
        self.peak_rows = 0  # most rows decoded together

    # -- queue ---------------------------------------------------------------------------------------
    def submit(self, state: DecodingState, options: GenerationOptions, eos_id: int | None = None, pad_id: int = 0,
               owner: Hashable = None, generator: torch.Generator | None = None, context: Any = None) -> Job:
        """Queue one request: ``state`` not yet prefilled, ``options`` greedy decoding or sampling."""
        if not isinstance(options, GenerationOptions):
            raise ValueError(f"options must be a GenerationOptions, got {type(options).__name__}")
        if options.num_beams > 1:
            raise ValueError(f"num_beams={options.num_beams}: beam search is not batched across requests; "
                             "decode it alone (generate / decode_state)")
        if generator is not None and not options.do_sample:
            raise ValueError(f"generator: not an option of {options.search} (it draws samples: do_sample=True)")
        job = Job(state, options, eos_id, pad_id, owner, generator, context=context)
        if options.max_new_tokens == 0:
            job.tokens, job.ended, job.done = [[] for _ in range(job.rows)], [False] * job.rows, True
            return job
        self.pending.setdefault(owner, deque()).append(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancel()

    @property
    def active_rows(self) -> int:
        return sum(j.rows for g in self.groups for j in g.jobs)

    @property
    def busy(self) -> bool:
        return bool(self.pending) or bool(self.groups)

    def _next_pending(self) -> Job | None:
        """The next queued job, round-robin across owners (the owner goes to the back of the line)."""
        while self.pending:
            owner, queue = next(iter(self.pending.items()))
            job = queue.popleft()
            del self.pending[owner]
            if queue:
                self.pending[owner] = queue
            if job.cancelled:
                job.done = True
                continue
            return job
        return None

    def _peek_rows(self) -> int | None:
        for queue in self.pending.values():
            for job in queue:
                if not job.cancelled:
                    return job.rows
        return None

    # -- decoding ------------------------------------------------------------------------------------
    def _admit(self, job: Job) -> None:
        """Prefill ``job`` alone and put its rows into a group (merged with one if the states allow)."""
        logits = job.state.prefill()
        check_args(vocab_size=logits.shape[-1], eos_id=job.eos_id)
        n = job.options.num_samples
        if n > 1:
            index = torch.arange(logits.shape[0], device=logits.device).repeat_interleave(n)
            job.state.reorder(index)
            logits = logits.index_select(0, index)
        job.logits = logits
        job.picker = TokenPicker.of(job.options, logits.shape[0], job.eos_id, job.pad_id, job.generator,
                                    logits.device)
        job.tokens, job.ended = [[] for _ in range(logits.shape[0])], [False] * logits.shape[0]
        for group in self.groups:
            if isinstance(group.state, PrefixDecoding) and isinstance(job.state, PrefixDecoding):
                try:
                    group.state = PrefixDecoding.merge([group.state, job.state])
                except ValueError:
                    continue
                group.jobs.append(job)
                return
        self.groups.append(_Group(job))

    def step(self) -> list[Job]:
        """Admit queued jobs while rows are free, pick one token for every row of every active job, let
        finished jobs leave, and feed the picked tokens in one step per group. Returns the jobs that got a
        token (or finished, or failed) in this call."""
        touched: list[Job] = []
        with torch.inference_mode():
            while True:
                rows = self._peek_rows()
                if rows is None or (self.groups and self.active_rows + rows > self.max_rows):
                    break
                job = self._next_pending()
                try:
                    self._admit(job)
                except Exception as e:  # noqa: BLE001 - the job fails alone, the others go on
                    job.error, job.done = e, True
                    touched.append(job)
            self.peak_rows = max(self.peak_rows, self.active_rows)
            for group in list(self.groups):
                keep, fed, alive = [], [], []
                start = 0
                for job in group.jobs:
                    rows = job.picker.done.shape[0]
                    if not job.cancelled:
                        tokens, finished = job.picker.pick(job.logits)
                        job.steps += 1
                        for i, (tok, fin) in enumerate(zip(tokens.tolist(), finished.tolist())):
                            if job.ended[i]:
                                continue
                            if fin:
                                job.ended[i] = True
                            else:
                                job.tokens[i].append(tok)
                        touched.append(job)
                    if job.cancelled or job.picker.over:
                        job.done, job.logits = True, None
                        if job.cancelled and job not in touched:
                            touched.append(job)
                    else:
                        keep.append(torch.arange(start, start + rows))
                        fed.append(tokens)
                        alive.append(job)
                    start += rows
                if not alive:
                    self.groups.remove(group)
                    continue
                try:
                    if len(alive) < len(group.jobs):
                        group.state.reorder(torch.cat(keep).to(fed[0].device))
                    group.jobs = alive
                    logits = group.state.step(torch.cat(fed))
                except Exception as e:  # noqa: BLE001 - a failed step fails the jobs of its group
                    for job in alive:
                        job.error, job.done, job.logits = e, True, None
                    self.groups.remove(group)
                    continue
                start = 0
                for job in alive:
                    rows = job.picker.done.shape[0]
                    job.logits = logits[start:start + rows]
                    start += rows
            if any(self.groups):
                self.steps += 1
        return touched

    def run(self) -> None:
        """Step until every submitted job is done."""
        while self.busy:
            self.step()


__all__ = ["BatchDecoder", "Job"]
