"""Autoregressive decoding with a KV cache: one ``generate`` for every family.

    y_t ~ p(y_t | x, y_<t)   greedy / beam / top-k·top-p sampling over a decoding state

* :mod:`.state`: the decoding states (``prefill``, ``step``, ``reorder``) that own each request's rows;
* :mod:`.options`: :class:`GenerationOptions`, every generation option (name, type, default, check, help)
  once;
* :mod:`.search`: greedy, sampling, streaming and HF-rule beam search over any state;
* :mod:`.batch`: :class:`BatchDecoder`, continuous batching: requests share decoding steps, new ones
  join between steps (merged states), each request's tokens those it gets alone;
* :mod:`.bert4keras_rule`: bert4keras's ``AutoRegressiveDecoder`` beam search.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kexue.generation.options import GenerationOptions
from kexue.generation.search import (TokenPicker, beam_search, check_args, decode_state, greedy, sample, stream,
                                     top_k_top_p_filter)
from kexue.generation.state import DecodingState, PrefixDecoding, Seq2SeqDecoding, T5Decoding, decoding_state
from kexue.generation.batch import BatchDecoder, Job


def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None, *,
             options: GenerationOptions | None = None, eos_id: int | None = None, use_cache: bool = True,
             cond: Tensor | None = None, banned_ids: Sequence[int] | Sequence[Sequence[int]] | None = None,
             generator: torch.Generator | None = None, **kwargs) -> list[list[int]]:
    """One call for any family: beam search if ``num_beams > 1``, sampling if ``do_sample``, else greedy.

    ``options``: a :class:`GenerationOptions`; keyword arguments are its fields (``max_new_tokens``,
    ``num_beams``, ``do_sample``, ``num_samples``, ``temperature``, ``top_k``, ``top_p``, ``seed``,
    ``rule`` ...) and replace those of ``options``: ``generate(m, ids, **kw)`` is
    ``generate(m, ids, options=GenerationOptions(**kw))``. ``n`` (sampling) and ``num_return`` (beam
    search) are also taken, as ``num_samples``. An unknown name, a bad value, or an option that the
    chosen search ignores is refused by name before the model runs. ``eos_id``: the end token;
    ``cond [B, cond_dim]``: Conditional-LayerNorm vectors; ``banned_ids``: ids never produced (one list,
    or one per row); ``generator``: the sampler's random source (else one seeded ``seed``, else torch's
    global one). ``max_new_tokens=0`` returns empty results without running the model."""
    options = GenerationOptions.of(options, **kwargs)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    check_args(vocab_size=vocab, eos_id=eos_id, num_beams=options.num_beams)
    state = decoding_state(model, input_ids, attention_mask, segment_ids, use_cache, cond, banned_ids)
    return decode_state(state, options, eos_id, generator, device=getattr(input_ids, "device", None))


__all__ = ["BatchDecoder", "DecodingState", "Job", "TokenPicker", "GenerationOptions", "PrefixDecoding", "Seq2SeqDecoding", "T5Decoding", "beam_search",
           "check_args", "decode_state", "decoding_state", "generate", "greedy", "sample", "stream",
           "top_k_top_p_filter"]
