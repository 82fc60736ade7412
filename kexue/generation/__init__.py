"""Autoregressive decoding with a KV cache: one ``generate`` for every family.

    y_t ~ p(y_t | x, y_<t)   greedy / beam / top-k·top-p sampling over a decoding state

* :mod:`.state`: the decoding states (``prefill``, ``step``, ``reorder``) that own each request's rows;
* :mod:`.search`: greedy, sampling, streaming and HF-rule beam search over any state;
* :mod:`.bert4keras_rule`: bert4keras's ``AutoRegressiveDecoder`` beam search.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kexue.generation.search import beam_search, check_args, greedy, sample, stream, top_k_top_p_filter
from kexue.generation.state import DecodingState, PrefixDecoding, Seq2SeqDecoding, T5Decoding, decoding_state


def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
             max_new_tokens: int = 32, eos_id: int | None = None, min_new_tokens: int = 0, num_beams: int = 1,
             do_sample: bool = False, use_cache: bool = True, cond: Tensor | None = None,
             banned_ids: Sequence[int] | Sequence[Sequence[int]] | None = None, rule: str = "hf",
             **kwargs) -> list[list[int]]:
    """One call for any family: beam search if ``num_beams > 1``, sampling if ``do_sample``, else greedy.

    ``cond [B, cond_dim]``: Conditional-LayerNorm vectors; ``banned_ids``: ids never produced (one list,
    or one per row); ``rule``: ``"hf"`` or ``"bert4keras"`` (see :mod:`kexue.generation.search`).
    Extra keyword arguments go to :func:`beam_search` (``num_return``, ``length_penalty``,
    ``early_stopping``, ``temperature``, ``min_ends``) or :func:`sample` (``n``, ``temperature``,
    ``top_k``, ``top_p``, ``generator``, ``min_ends``); one that the chosen search lacks is refused.
    ``max_new_tokens=0`` returns empty results without running the model."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    check_args(vocab_size=vocab, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
               num_beams=num_beams, eos_id=eos_id, rule=rule, **kwargs)
    if num_beams > 1 and do_sample:
        raise ValueError("do_sample=True with num_beams > 1: beam sampling is not implemented")
    allowed = ({"num_return", "length_penalty", "early_stopping", "temperature", "min_ends"} if num_beams > 1
               else {"n", "temperature", "top_k", "top_p", "generator", "min_ends"} if do_sample else set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        search = "beam search" if num_beams > 1 else "sampling" if do_sample else "greedy decoding"
        raise ValueError(f"{unknown[0]}: not an option of {search} (allowed: {sorted(allowed)})")
    if rule != "hf" and num_beams == 1 and not do_sample:
        raise ValueError(f"rule={rule!r}: greedy decoding has one rule; use num_beams > 1 or do_sample=True")
    state = decoding_state(model, input_ids, attention_mask, segment_ids, use_cache, cond, banned_ids)
    if num_beams > 1:
        return beam_search(state, max_new_tokens, eos_id, num_beams, min_new_tokens, rule=rule, **kwargs)
    if do_sample:
        return sample(state, max_new_tokens, eos_id, min_new_tokens, rule=rule, **kwargs)
    return greedy(state, max_new_tokens, eos_id, min_new_tokens)


__all__ = ["DecodingState", "PrefixDecoding", "Seq2SeqDecoding", "T5Decoding", "beam_search", "check_args",
           "decoding_state", "generate", "greedy", "sample", "stream", "top_k_top_p_filter"]
