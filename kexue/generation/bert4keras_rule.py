"""bert4keras 0.11.5 ``AutoRegressiveDecoder.beam_search``, reproduced over a decoding state.

    score(y_1..t) = Σ_i log(p(y_i | x, y_<i) + 1e-12),   p = softmax(logits / T)

The rule of bert4keras (used by its SimBERT, UniLM and T5 PEGASUS examples, 《从语言模型到Seq2Seq：
Transformer如戏，全靠Mask》), which differs from HF ``generate``:

* scores are ``log(probas + 1e-12)`` (its ``predict`` wrapper, ``rtype='logits'``) accumulated in
  float64, no length penalty; the first step expands one row into ``topk`` beams;
* each step keeps the ``topk`` best of (beams × vocab) — only topk candidates, not 2·topk;
* once the output has ``minlen`` tokens: if the highest-scoring candidate ends with the end token and
  holds ``min_ends`` of them, it is the answer at once; otherwise every candidate that has ended is
  dropped and ``topk`` shrinks to the number left (an end token before ``minlen`` is not an end: that
  candidate goes on);
* after ``maxlen`` steps the best remaining candidate is returned.

Differences that do not change a result: bert4keras decodes one input at a time, here the inputs of
a batch search side by side (a dropped beam is a row scored -inf); bert4keras's ``argpartition``
leaves candidates unordered, here they are sorted (only exact score ties could order differently).
The result is bert4keras's ``output_ids`` without the start token and without the final end token.
"""
from __future__ import annotations

import torch
from torch import Tensor

from kexue.generation.state import DecodingState

_EPS = 1e-12  # bert4keras: np.log(probas + 1e-12)


def log_scores(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """bert4keras's per-step scores: log(softmax(logits / T) + 1e-12), float32, then float64."""
    probas = torch.softmax(logits.float() / temperature, -1)
    return torch.log(probas + _EPS).double()


def beam_search(state: DecodingState, max_new_tokens: int, eos_id: int | None, num_beams: int,
                min_new_tokens: int = 0, temperature: float = 1.0, min_ends: int = 1) -> list[list[int]]:
    """One sequence per input row: ``AutoRegressiveDecoder.beam_search(inputs, topk=num_beams,
    temperature, min_ends)`` with ``maxlen=max_new_tokens``, ``minlen=min_new_tokens``, ``end_id=eos_id``."""
    K, T = num_beams, max_new_tokens
    with torch.inference_mode():
        logits = state.prefill()
        B, V = logits.shape
        dev = logits.device
        state.reorder(torch.arange(B, device=dev).repeat_interleave(K))
        logits = logits.repeat_interleave(K, 0)
        seq = torch.zeros(B, K, T, dtype=torch.long, device=dev)
        score = torch.zeros(B, K, dtype=torch.float64, device=dev)
        score[:, 1:] = float("-inf")  # step 0 expands a single row, as in bert4keras
        ends = torch.zeros(B, K, dtype=torch.long, device=dev)
        width = torch.full((B,), K, device=dev)  # bert4keras's shrinking topk, per input
        searching = torch.ones(B, dtype=torch.bool, device=dev)
        answer: list[Tensor | None] = [None] * B
        offsets = (torch.arange(B, device=dev) * K)[:, None]
        slot = torch.arange(K, device=dev)[None]
        for t in range(T):
            acc = (score[:, :, None] + log_scores(logits, temperature).view(B, K, V)).view(B, K * V)
            cand, flat = torch.topk(acc, K)
            cand = cand.masked_fill(slot >= width[:, None], float("-inf"))  # only the topk best survive
            src, tok = flat // V, flat % V
            seq = seq.gather(1, src[:, :, None].expand(B, K, T)).clone()
            seq[:, :, t] = tok
            is_end = tok == eos_id if eos_id is not None else torch.zeros_like(tok, dtype=torch.bool)
            ends = ends.gather(1, src) + is_end.long()
            score = cand
            if t + 1 >= min_new_tokens:
                finished = is_end & (ends >= min_ends)
                best = score.argmax(1)
                won = finished.gather(1, best[:, None])[:, 0] & searching
                for b in won.nonzero().flatten().tolist():
                    answer[b] = seq[b, best[b], : t + 1]
                searching = searching & ~won
                live = ~finished & torch.isfinite(score)
                width = torch.where(finished.any(1), live.sum(1), width)
                score = score.masked_fill(~live | ~searching[:, None], float("-inf"))
            if not bool(searching.any()) or t + 1 == T:
                break
            state.reorder((src + offsets).view(-1))
            logits = state.step(tok.view(-1))
        best = score.argmax(1)
        out = []
        for b in range(B):
            row = (answer[b] if answer[b] is not None else seq[b, best[b], : t + 1]).tolist()
            if eos_id is not None and row and row[-1] == eos_id:
                row = row[:-1]
            out.append(row)
        return out
