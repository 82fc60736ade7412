"""Searches over a decoding state: greedy, top-k / top-p sampling (n samples), streaming, beam search.

    y_t = argmax / beam / sample of p(y_t | x, y_<t),   p = softmax(logits / T) restricted to top-k / top-p

The searches only see the :class:`~kexue.generation.state.DecodingState` protocol (``prefill``,
``step``, ``reorder``), so each works for every family, batch size, beam count and sample count.

Two stopping / scoring rules (``rule=``):

* ``"hf"`` (default): HF ``generate`` (transformers 5) step for step, token-identical. The end token
  is forbidden before ``min_new_tokens``; beam search keeps 2·K candidates per step and scores
  finished hypotheses sum(log p) / len^α, ``early_stopping`` True / False (heuristic) / "never".
* ``"bert4keras"``: bert4keras 0.11.5 ``AutoRegressiveDecoder`` (《如何应对Seq2Seq中的“根本停不下来”问题？》
  and the SimBERT posts use it), see :mod:`kexue.generation.bert4keras_rule`; with one beam it is
  bert4keras's ``beam_search(topk=1)``, greedy decoding under bert4keras's end-token rules.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.generation.options import ALIASES, RULES, GenerationOptions, check_search, check_values  # noqa: F401
from kexue.generation.state import DecodingState

_NEG = -1.0e9  # HF's "impossible" score offset; kept identical so beam ties break the same way


def check_args(vocab_size: int | None = None, **args) -> None:
    """Refuse bad generation arguments with a ValueError naming the argument (only those given): each
    option by its :class:`~kexue.generation.options.GenerationOptions` field's check (``n`` and
    ``num_return`` are ``num_samples``), ``eos_id`` and ``num_beams`` against the vocabulary size."""
    eos_id = args.pop("eos_id", None)
    values, names = {}, {}
    for name, value in args.items():
        field = ALIASES.get(name, name)
        values[field], names[field] = value, name
    check_values(values, names)
    if eos_id is not None and (not isinstance(eos_id, int) or isinstance(eos_id, bool) or eos_id < 0
                               or (vocab_size is not None and eos_id >= vocab_size)):
        raise ValueError(f"eos_id={eos_id!r}: must be a token id in [0, {vocab_size})")
    if vocab_size is not None and values.get("num_beams", 1) > vocab_size:
        raise ValueError(f"num_beams={values['num_beams']!r}: must not exceed the vocabulary size {vocab_size}")


def _check_search(search: str, names: dict[str, str] | None = None, **values) -> None:
    """The options a search function was called with, checked as one :class:`GenerationOptions`
    (the others at their defaults): an option its ``rule`` ignores is refused by name."""
    full = {name: values.get(name, GenerationOptions.default(name)) for name in GenerationOptions.names()}
    check_search(full, names, search)


def _empty(state: DecodingState, per_row: int) -> list[list[int]]:
    """``max_new_tokens=0``: one empty result per output row, the model never runs (a state that
    does not say its ``batch_size`` has to prefill to tell)."""
    batch = getattr(state, "batch_size", None)
    if batch is None:
        with torch.inference_mode():
            batch = state.prefill().shape[0]
    return [[] for _ in range(batch * per_row)]


# --------------------------------------------------------------------------------------------------
# Greedy / sampling (streaming)
# --------------------------------------------------------------------------------------------------
def top_k_top_p_filter(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the k largest, and outside the smallest set whose probability
    reaches ``top_p`` (nucleus: tokens are kept up to and including the one whose cumulative
    probability crosses p, bert4keras's rule too); the most likely token always survives."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reaches p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class TokenPicker:
    """The next token of one request's rows, one step at a time: greedy decoding or sampling.

        y_t = argmax_y p_t(y)   or   y_t ~ softmax(top-k / top-p filtered logits_t / T)

    ``pick(logits [R, V])`` returns (tokens ``[R]``, rows that finished at this step); a row that
    has finished gets ``pad_id``. ``over`` is true after ``max_new_tokens`` steps or once every row
    finished. The searches (:func:`greedy`, :func:`sample`, :func:`stream`) and
    :class:`kexue.generation.batch.BatchDecoder` choose every token here, so a request decoded in a
    shared batch draws the same tokens (and, sampling, the same random numbers of its own generator)
    as the request decoded alone."""

    def __init__(self, rows: int, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0,
                 pad_id: int = 0, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None, rule: str = "hf",
                 min_ends: int = 1, device=None):
        self.max_new_tokens, self.eos_id, self.min_new_tokens, self.pad_id = max_new_tokens, eos_id, min_new_tokens, pad_id
        self.do_sample, self.temperature, self.top_k, self.top_p = do_sample, temperature, top_k, top_p
        self.generator, self.rule, self.min_ends = generator, rule, min_ends
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.ends = torch.zeros(rows, dtype=torch.long, device=device)
        self.t = 0  # tokens picked so far

    @classmethod
    def of(cls, options: GenerationOptions, rows: int, eos_id: int | None = None, pad_id: int = 0,
           generator: torch.Generator | None = None, device=None) -> "TokenPicker":
        """The picker of greedy decoding or sampling as ``options`` say (``num_samples`` rows per input are
        the caller's ``rows``); sampling draws from ``generator``, else a fresh one seeded ``options.seed``,
        else torch's global one."""
        o = options
        if o.num_beams > 1:
            raise ValueError(f"num_beams={o.num_beams}: beam search is not decoded one token per row at a time")
        if o.do_sample and generator is None and o.seed is not None:
            generator = torch.Generator(device=device or "cpu").manual_seed(o.seed)
        return cls(rows, o.max_new_tokens, eos_id, o.min_new_tokens, pad_id, o.do_sample, o.temperature, o.top_k,
                   o.top_p, generator if o.do_sample else None, o.rule, o.min_ends, device)

    @property
    def over(self) -> bool:
        return self.t >= self.max_new_tokens or bool(self.done.all())

    def pick(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        t, eos_id = self.t, self.eos_id
        scores = logits.float()
        if eos_id is not None and t < self.min_new_tokens and self.rule == "hf":
            scores[:, eos_id] = float("-inf")  # HF forbids the end; bert4keras lets the row go on
        if self.do_sample:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            scores = top_k_top_p_filter(scores, self.top_k, self.top_p)
            tokens = torch.multinomial(scores.softmax(-1), 1, generator=self.generator)[:, 0]
        else:
            tokens = scores.argmax(-1)
        finished = torch.zeros_like(self.done)
        if eos_id is not None:
            tokens = tokens.masked_fill(self.done, self.pad_id)
            is_end = (tokens == eos_id) & ~self.done
            self.ends = self.ends + is_end.long()
            finished = is_end & (self.ends >= self.min_ends) & (t + 1 >= self.min_new_tokens)
            self.done = self.done | finished
        self.t += 1
        return tokens, finished


def _steps(state: DecodingState, max_new_tokens: int, eos_id: int | None, min_new_tokens: int, pad_id: int,
           do_sample: bool, n: int, temperature: float, top_k: int | None, top_p: float | None,
           generator: torch.Generator | None, rule: str, min_ends: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (tokens ``[B·n]``, rows that finished at this step)."""
    with torch.inference_mode():
        logits = state.prefill()
        check_args(vocab_size=logits.shape[-1], eos_id=eos_id)
        if n > 1:
            index = torch.arange(logits.shape[0], device=logits.device).repeat_interleave(n)
            state.reorder(index)
            logits = logits.index_select(0, index)
        picker = TokenPicker(logits.shape[0], max_new_tokens, eos_id, min_new_tokens, pad_id, do_sample, temperature,
                             top_k, top_p, generator, rule, min_ends, logits.device)
        while True:
            tokens, finished = picker.pick(logits)
            yield tokens, finished
            if picker.over:
                return
            logits = state.step(tokens)


def stream(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0,
           pad_id: int = 0, do_sample: bool = False, n: int = 1, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the next token of every row (``[B·n]``; ``pad_id`` once a row has ended) until all rows
    ended or ``max_new_tokens``. Greedy unless ``do_sample``; ``n`` samples per input, rows grouped
    by input. ``min_new_tokens`` forbids the end token before that many tokens."""
    check_args(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, n=n, temperature=temperature,
               top_k=top_k, top_p=top_p, eos_id=eos_id, vocab_size=getattr(state, "vocab_size", None))
    if max_new_tokens == 0:
        return
    for tokens, _ in _steps(state, max_new_tokens, eos_id, min_new_tokens, pad_id, do_sample, n, temperature,
                            top_k, top_p, generator, "hf", 1):
        yield tokens


def _collect(steps: Iterator[tuple[Tensor, Tensor]]) -> list[list[int]]:
    """Each row's tokens up to (not including) the end token that finished it."""
    rows, stop = [], None
    for t, (tokens, finished) in enumerate(steps):
        if stop is None:
            stop = torch.full_like(tokens, -1)
        stop = torch.where(finished & (stop < 0), torch.full_like(stop, t), stop)
        rows.append(tokens)
    out = torch.stack(rows, 1).tolist()
    return [row if s < 0 else row[:s] for row, s in zip(out, stop.tolist())]


def greedy(state: DecodingState, max_new_tokens: int, eos_id: int | None = None,
           min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy decoding; each row's tokens up to (not including) the end token."""
    check_args(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, eos_id=eos_id,
               vocab_size=getattr(state, "vocab_size", None))
    if max_new_tokens == 0:
        return _empty(state, 1)
    return _collect(_steps(state, max_new_tokens, eos_id, min_new_tokens, 0, False, 1, 1.0, None, None, None,
                           "hf", 1))


def sample(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0,
           n: int = 1, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None, rule: str = "hf", min_ends: int = 1) -> list[list[int]]:
    """``n`` random samples per input (row ``b·n + i`` is sample i of input b), each cut before its end.

    ``rule="hf"``: the end token is forbidden before ``min_new_tokens``. ``rule="bert4keras"``
    (``random_sample``): an end token before ``min_new_tokens`` (its ``minlen``) does not stop the row,
    which goes on; a row stops at an end token once it holds ``min_ends`` of them and is at least
    ``min_new_tokens`` long (the result keeps its earlier end tokens). bert4keras returns samples in
    the order they finish; here they stay grouped by input. Both rules sample from the same set:
    top-k, then the nucleus including the token that crosses ``top_p``."""
    check_args(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, n=n, temperature=temperature,
               top_k=top_k, top_p=top_p, eos_id=eos_id, rule=rule, min_ends=min_ends,
               vocab_size=getattr(state, "vocab_size", None))
    _check_search("sampling", {"num_samples": "n"}, do_sample=True, num_samples=n, temperature=temperature,
                  top_k=top_k, top_p=top_p, rule=rule, min_ends=min_ends)
    if max_new_tokens == 0:
        return _empty(state, n)
    return _collect(_steps(state, max_new_tokens, eos_id, min_new_tokens, 0, True, n, temperature, top_k, top_p,
                           generator, rule, min_ends))


# --------------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------------
def beam_search(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, num_beams: int = 4,
                min_new_tokens: int = 0, length_penalty: float = 1.0, early_stopping: bool | str = False,
                num_return: int = 1, rule: str = "hf", temperature: float = 1.0,
                min_ends: int = 1) -> list[list[int]]:
    """Beam search; returns the ``num_return`` best hypotheses per input (rows grouped by input),
    each cut before its end token. ``rule="hf"``: HF ``generate``'s semantics (``length_penalty``,
    ``early_stopping``); ``rule="bert4keras"``: :func:`kexue.generation.bert4keras_rule.beam_search`
    (``temperature``, ``min_ends``; one hypothesis per input)."""
    check_args(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
               num_return=num_return, eos_id=eos_id, rule=rule, temperature=temperature, min_ends=min_ends,
               length_penalty=length_penalty, early_stopping=early_stopping,
               vocab_size=getattr(state, "vocab_size", None))
    _check_search("beam search", {"num_samples": "num_return"}, num_beams=num_beams, length_penalty=length_penalty,
                  early_stopping=early_stopping, num_samples=num_return, rule=rule, temperature=temperature,
                  min_ends=min_ends)
    if rule == "bert4keras":
        if max_new_tokens == 0:
            return _empty(state, 1)
        from kexue.generation.bert4keras_rule import beam_search as b4k_beam_search

        return b4k_beam_search(state, max_new_tokens, eos_id, num_beams, min_new_tokens, temperature, min_ends)
    if max_new_tokens == 0:
        return _empty(state, num_return)
    K, T = num_beams, max_new_tokens
    with torch.inference_mode():
        logits = state.prefill()
        B, V = logits.shape
        check_args(vocab_size=V, eos_id=eos_id, num_beams=K)
        dev = logits.device
        expand = torch.arange(B, device=dev).repeat_interleave(K)
        state.reorder(expand)
        logits = logits.index_select(0, expand)
        keep = min(2 * K, K * V)  # candidates per step: enough that K continue even if K of them just ended
        top_mask = torch.arange(keep, device=dev) < K
        run_seq = torch.zeros(B, K, T, dtype=torch.long, device=dev)
        run_score = torch.zeros(B, K, device=dev)
        run_score[:, 1:] = _NEG  # all beams start identical: let only the first one expand
        fin_seq = run_seq.clone()
        fin_score = torch.full((B, K), _NEG, device=dev)
        fin_done = torch.zeros(B, K, dtype=torch.bool, device=dev)
        improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
        offsets = (torch.arange(B, device=dev) * K)[:, None]
        for t in range(T):
            logp = F.log_softmax(logits.float(), -1)
            if eos_id is not None and t < min_new_tokens:
                logp[:, eos_id] = float("-inf")
            acc = (logp.view(B, K, V) + run_score[:, :, None]).view(B, K * V)
            cand_score, flat = torch.topk(acc, keep)
            src, tok = flat // V, flat % V
            cand_seq = run_seq.gather(1, src[:, :, None].expand(B, keep, T)).clone()
            cand_seq[:, :, t] = tok
            ended = (tok == eos_id) if eos_id is not None else torch.zeros_like(tok, dtype=torch.bool)
            if t + 1 >= T:
                ended = torch.ones_like(ended)
            # Continue with the K best candidates that did not end.
            live = cand_score + ended.float() * _NEG
            nxt = torch.topk(live, K).indices
            run_seq = cand_seq.gather(1, nxt[:, :, None].expand(B, K, T))
            run_score = live.gather(1, nxt)
            run_src = src.gather(1, nxt)
            # Candidates among the top K that ended compete with the finished hypotheses.
            just = ended & top_mask[None]
            score = cand_score / ((t + 1) ** length_penalty)
            score = score + (fin_done.all(-1, keepdim=True) & (early_stopping is True)).float() * _NEG
            score = score + (~improvable).float() * _NEG
            score = score + (~just).float() * _NEG
            m_seq, m_score = torch.cat([fin_seq, cand_seq], 1), torch.cat([fin_score, score], 1)
            m_done = torch.cat([fin_done, just], 1)
            best = torch.topk(m_score, K).indices
            fin_seq = m_seq.gather(1, best[:, :, None].expand(B, K, T))
            fin_score, fin_done = m_score.gather(1, best), m_done.gather(1, best)
            # HF's heuristic: stop when the best running beam cannot beat the worst finished one.
            best_len = (T if early_stopping == "never" and length_penalty > 0.0 else t + 1)
            best_running = run_score[:, :1] / (best_len ** length_penalty)
            worst = torch.where(fin_done, fin_score.min(1, keepdim=True).values, torch.full_like(fin_score, _NEG))
            improvable = improvable & (best_running > worst).any(-1, keepdim=True)
            if (not bool(improvable.any()) or (bool(fin_done.all()) and early_stopping is True)
                    or bool(ended.all())):
                break
            state.reorder((run_src + offsets).view(-1))
            logits = state.step(run_seq[:, :, t].reshape(-1))
        # A hypothesis ends at its end token or at the last step it was scored.
        rows = fin_seq[:, :num_return].reshape(B * num_return, T)[:, : t + 1].tolist()
        return [row[: row.index(eos_id)] if eos_id is not None and eos_id in row else row for row in rows]


# --------------------------------------------------------------------------------------------------
# The search the options choose
# --------------------------------------------------------------------------------------------------
def decode_state(state: DecodingState, options: GenerationOptions, eos_id: int | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None) -> list[list[int]]:
    """Run over ``state`` the search ``options`` choose: :func:`beam_search` if ``num_beams > 1``
    (``num_samples`` best hypotheses per input), :func:`sample` if ``do_sample`` (``num_samples`` per input;
    ``generator``, or a fresh one on ``device`` seeded ``options.seed``, or torch's global one), else
    :func:`greedy`."""
    o = options
    if generator is not None and not o.do_sample:
        raise ValueError(f"generator: not an option of {o.search} (it draws samples: do_sample=True)")
    if generator is not None and o.seed is not None:
        raise ValueError(f"seed={o.seed!r} and generator: give one")
    if o.num_beams > 1:
        return beam_search(state, o.max_new_tokens, eos_id, o.num_beams, o.min_new_tokens, o.length_penalty,
                           o.early_stopping, o.num_samples, o.rule, o.temperature, o.min_ends)
    if o.do_sample:
        if o.seed is not None:
            generator = torch.Generator(device=device or "cpu").manual_seed(o.seed)
        return sample(state, o.max_new_tokens, eos_id, o.min_new_tokens, o.num_samples, o.temperature, o.top_k,
                      o.top_p, generator, o.rule, o.min_ends)
    if o.rule == "bert4keras":  # bert4keras's topk=1 decoding: its beam search with one beam
        return beam_search(state, o.max_new_tokens, eos_id, 1, o.min_new_tokens, rule="bert4keras",
                           temperature=o.temperature, min_ends=o.min_ends)
    return greedy(state, o.max_new_tokens, eos_id, o.min_new_tokens)
