"""Autoregressive decoding with a KV cache: greedy, beam search, top-k / top-p sampling, streaming.

    y_t = argmax / beam / sample of p(y_t | x, y_<t),   p = softmax(logits / T) restricted to top-k / top-p

bert4keras's ``AutoRegressiveDecoder`` (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》,
《如何应对Seq2Seq中的“根本停不下来”问题？》) re-ran the whole prefix at every step. Here every model
family is wrapped in a small *decoding state* that runs the prefix once and then feeds one token per
step, reusing cached keys/values:

* T5: the encoder runs once; its keys/values for cross-attention are projected once (``KVCache.static``).
* UniLM: the source (segment 0) is run once; each generated token is appended as segment 1.
* GPT-style LM: the prompt is run once, then one token per step.

A state implements ``prefill() -> logits [B, V]`` (the first new token), ``step(tokens [B]) -> logits``
and ``reorder(index)`` (keep / duplicate rows: beam search, n samples). The search functions only see
this protocol. Batches of different lengths are left-padded (``attention_mask``) so every row's next
token sits in the same column; positions are counted from each row's first real token.

Beam search follows HF ``generate`` (transformers 5) step for step so results are token-identical:
2·K candidates per step, hypotheses that end (end token or max length) are scored sum(log p) / len^α
with len the generated length, ``early_stopping`` True / False (heuristic) / "never".
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue.layers import KVCache

_NEG = -1.0e9  # HF's "impossible" score offset; kept identical so beam ties break the same way


class DecodingState(Protocol):
    def prefill(self) -> Tensor: ...

    def step(self, tokens: Tensor) -> Tensor: ...

    def reorder(self, index: Tensor) -> None: ...


# --------------------------------------------------------------------------------------------------
# Decoding states per family
# --------------------------------------------------------------------------------------------------
class T5Decoding:
    """Encoder once; decoder from ``decoder_start_token_id`` one token per step."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None = None, use_cache: bool = True):
        self.model, self.input_ids, self.attention_mask, self.use_cache = model, input_ids, attention_mask, use_cache
        if attention_mask is not None and bool(attention_mask.all()):
            self.attention_mask = None  # no padding: skip building masks at every step

    def prefill(self) -> Tensor:
        m = self.model
        self.enc = m.encode(self.input_ids, self.attention_mask)
        self.tokens = torch.full((self.input_ids.shape[0], 1), m.config.decoder_start_token_id,
                                 dtype=torch.long, device=self.input_ids.device)
        self.cache = KVCache() if self.use_cache else None
        return m.decode(self.tokens, self.enc, self.attention_mask, self.cache)[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        if self.cache is not None:
            return self.model.decode(tokens[:, None], self.enc, self.attention_mask, self.cache)[:, -1]
        self.tokens = torch.cat([self.tokens, tokens[:, None]], 1)
        return self.model.decode(self.tokens, self.enc, self.attention_mask)[:, -1]

    def reorder(self, index: Tensor) -> None:
        self.enc, self.tokens = self.enc.index_select(0, index), self.tokens.index_select(0, index)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


class PrefixDecoding:
    """A :class:`kexue.models.Transformer` with ``application="lm"`` (GPT-style: continue the prompt)
    or ``"unilm"`` (seq2seq: the prompt is the source, generated tokens get segment id 1).

    ``input_ids`` must be left-padded when rows differ in length (``attention_mask`` 0 on the left).
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None = None,
                 segment_ids: Tensor | None = None, use_cache: bool = True):
        self.model, self.use_cache = model, use_cache
        self.unilm = model.application == "unilm"
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("PrefixDecoding needs left padding: the last column must be real tokens")
        self.ids, self.mask = input_ids, attention_mask
        # no segment ids unless given or UniLM (GPT-2 adds wte(token_type_ids) whenever they are passed)
        self.segments = segment_ids if segment_ids is not None or not self.unilm else torch.zeros_like(input_ids)
        # Positions count real tokens only, so a left-padded row sees the positions it was trained on.
        if attention_mask is not None:
            self.positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        else:
            self.positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)

    def _run(self, ids, segments, mask, positions, cache) -> Tensor:
        out = self.model(ids, segment_ids=segments, attention_mask=mask, position_ids=positions, cache=cache)
        return out.logits[:, -1]

    def prefill(self) -> Tensor:
        self.cache = KVCache() if self.use_cache else None
        self.next_pos = self.positions[:, -1:] + 1
        self.new_segment = None if self.segments is None else torch.full_like(self.next_pos, 1 if self.unilm else 0)
        return self._run(self.ids, self.segments, self.mask, self.positions, self.cache)

    def step(self, tokens: Tensor) -> Tensor:
        tokens = tokens[:, None]
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones_like(tokens)], 1)
        pos, self.next_pos = self.next_pos, self.next_pos + 1
        if self.cache is not None:
            return self._run(tokens, self.new_segment, self.mask, pos, self.cache)
        self.ids = torch.cat([self.ids, tokens], 1)
        if self.segments is not None:
            self.segments = torch.cat([self.segments, self.new_segment], 1)
        self.positions = torch.cat([self.positions, pos], 1)
        return self._run(self.ids, self.segments, self.mask, self.positions, None)

    def reorder(self, index: Tensor) -> None:
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        self.ids, self.segments, self.positions = pick(self.ids), pick(self.segments), pick(self.positions)
        self.mask, self.next_pos, self.new_segment = pick(self.mask), pick(self.next_pos), pick(self.new_segment)
        if self.cache is not None:
            self.cache.reorder(index)  # also the segment ids UniLM keeps for its mask


def decoding_state(model, input_ids: Tensor, attention_mask: Tensor | None = None,
                   segment_ids: Tensor | None = None, use_cache: bool = True) -> DecodingState:
    """The decoding state for ``model``: T5 (encoder-decoder) or a Transformer with application lm/unilm."""
    if hasattr(model, "encode") and hasattr(model, "decode"):
        return T5Decoding(model, input_ids, attention_mask, use_cache)
    if getattr(model, "application", None) not in ("lm", "unilm"):
        raise ValueError("decoding needs a T5 model or a Transformer built with application='lm' or 'unilm'")
    return PrefixDecoding(model, input_ids, attention_mask, segment_ids, use_cache)


# --------------------------------------------------------------------------------------------------
# Greedy / sampling (streaming)
# --------------------------------------------------------------------------------------------------
def top_k_top_p_filter(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the k largest, and outside the smallest set whose probability
    reaches ``top_p`` (nucleus); the most likely token always survives."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def stream(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0,
           pad_id: int = 0, do_sample: bool = False, n: int = 1, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the next token of every row (``[B·n]``; ``pad_id`` once a row has ended) until all rows
    ended or ``max_new_tokens``. Greedy unless ``do_sample``; ``n`` samples per input, rows grouped
    by input. ``min_new_tokens`` forbids the end token before that many tokens."""
    with torch.inference_mode():
        logits = state.prefill()
        if n > 1:
            index = torch.arange(logits.shape[0], device=logits.device).repeat_interleave(n)
            state.reorder(index)
            logits = logits.index_select(0, index)
        done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        for t in range(max_new_tokens):
            scores = logits.float()
            if eos_id is not None and t < min_new_tokens:
                scores[:, eos_id] = float("-inf")
            if do_sample:
                if temperature != 1.0:
                    scores = scores / temperature
                scores = top_k_top_p_filter(scores, top_k, top_p)
                tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
            else:
                tokens = scores.argmax(-1)
            if eos_id is not None:
                tokens = tokens.masked_fill(done, pad_id)
                done = done | (tokens == eos_id)
            yield tokens
            if t + 1 == max_new_tokens or bool(done.all()):
                return
            logits = state.step(tokens)


def _trim(rows: Tensor, eos_id: int | None) -> list[list[int]]:
    """Cut each row before its end token."""
    out = []
    for row in rows.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        out.append(row)
    return out


def greedy(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy decoding; each row's tokens up to (not including) the end token."""
    steps = list(stream(state, max_new_tokens, eos_id, min_new_tokens))
    return _trim(torch.stack(steps, 1), eos_id)


def sample(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, min_new_tokens: int = 0,
           n: int = 1, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """``n`` random samples per input (row ``b·n + i`` is sample i of input b)."""
    steps = list(stream(state, max_new_tokens, eos_id, min_new_tokens, do_sample=True, n=n,
                        temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))
    return _trim(torch.stack(steps, 1), eos_id)


# --------------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------------
def beam_search(state: DecodingState, max_new_tokens: int, eos_id: int | None = None, num_beams: int = 4,
                min_new_tokens: int = 0, length_penalty: float = 1.0, early_stopping: bool | str = False,
                num_return: int = 1) -> list[list[int]]:
    """Beam search with HF ``generate``'s semantics; returns the ``num_return`` best hypotheses per
    input (rows grouped by input), each cut before its end token."""
    K, T = num_beams, max_new_tokens
    with torch.inference_mode():
        logits = state.prefill()
        B, V = logits.shape
        dev = logits.device
        expand = torch.arange(B, device=dev).repeat_interleave(K)
        state.reorder(expand)
        logits = logits.index_select(0, expand)
        keep = 2 * K  # candidates per step: enough that K continue even if K of them just ended
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
        return _trim(fin_seq[:, :num_return].reshape(B * num_return, T)[:, : t + 1], eos_id)


def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
             max_new_tokens: int = 32, eos_id: int | None = None, min_new_tokens: int = 0, num_beams: int = 1,
             do_sample: bool = False, use_cache: bool = True, **kwargs) -> list[list[int]]:
    """One call for any family: beam search if ``num_beams > 1``, sampling if ``do_sample``, else greedy.
    Extra keyword arguments go to :func:`beam_search` / :func:`sample`."""
    state = decoding_state(model, input_ids, attention_mask, segment_ids, use_cache)
    if num_beams > 1:
        return beam_search(state, max_new_tokens, eos_id, num_beams, min_new_tokens, **kwargs)
    if do_sample:
        return sample(state, max_new_tokens, eos_id, min_new_tokens, **kwargs)
    return greedy(state, max_new_tokens, eos_id, min_new_tokens)
