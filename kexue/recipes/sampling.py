"""The predictors' generation options (:func:`task_options`) and the ids they never generate.

Every option is a field of :class:`kexue.generation.GenerationOptions`; a predictor takes those that apply
to its task (``Predictor.options``) and builds one ``GenerationOptions`` per ``predict`` call here.
Conditional-LayerNorm vectors, banned ids and the responding speaker's segment id are per-request
state of :mod:`kexue.generation`'s decoding states (``cond=``, ``banned_ids=``, ``new_segment=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kexue.generation import DecodingState, GenerationOptions
from kexue.generation.options import check_values, search_of

# The options only sampling takes: giving one asks a generator for samples (temperature, top_k, top_p, seed).
SAMPLING_ONLY = tuple(n for n in GenerationOptions.names() if GenerationOptions.applies(n, "sampling")
                      and not GenerationOptions.applies(n, "beam search")
                      and not GenerationOptions.applies(n, "greedy decoding"))


@dataclass
class Decoding:
    """One input's generation as its predictor runs it: the decoding state (not yet prefilled), the
    options and end token, ``text(ids)`` (a row's tokens as text) and ``output(rows)`` (the dict
    ``predict`` returns for this input, from the rows that :func:`kexue.generation.decode_state` gives).
    ``predict`` is ``[d.output(decode_state(d.state, d.options, d.eos_id)) for d in decodings]``; a server
    decodes the same states in shared steps (:class:`kexue.generation.BatchDecoder`) and builds the same
    outputs. ``prompt_tokens``: the length of the prompt the model reads."""

    state: DecodingState
    options: GenerationOptions
    eos_id: int | None
    text: Callable[[list[int]], str]
    output: Callable[[list[list[int]]], dict]
    prompt_tokens: int


def special_ids(tokenizer) -> list[int]:
    """[PAD] / [CLS] / [MASK] / [UNK]: tokens a generated text never contains (those the vocabulary has: a
    GPT-2 / SentencePiece tokenizer may lack some, and GPT-2's unknown token is its end token, never banned)."""
    ids = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id]
    return [i for i in ids if i is not None and i != tokenizer.sep_id]


def task_options(given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, sample: bool | None = True,
                 **fixed) -> GenerationOptions:
    """The options of one ``predict`` call: the caller's ``given`` options over the task's ``defaults``
    (its model folder's saved settings) over ``fixed`` (the task's own, e.g. ``min_new_tokens``).

    Beam search if ``num_beams > 1`` (the defaults' sampling settings then drop out; a given one is
    refused by name); else sampling if ``sample`` (``None``: if a sampling option is given), with a fresh
    generator seeded ``seed``, 0 unless given (same input, same output); else greedy decoding."""
    merged = {**fixed, **(defaults or {}), **given}
    check_values(merged)
    beams = merged.get("num_beams", 1) > 1
    do_sample = not beams and (bool(set(SAMPLING_ONLY) & set(given)) if sample is None else bool(sample))
    search = search_of(merged.get("num_beams", 1), do_sample)
    if search == "greedy decoding" and given.get("num_samples", 1) > 1:
        raise ValueError(f"num_samples={given['num_samples']!r}: greedy decoding gives one text; give num_beams > 1 "
                         f"or a sampling option ({', '.join(SAMPLING_ONLY)})")
    values = {k: v for k, v in merged.items() if k in given or GenerationOptions.applies(k, search)}
    if do_sample:
        values.setdefault("seed", 0)
    return GenerationOptions(**{**values, "do_sample": do_sample})


__all__ = ["Decoding", "SAMPLING_ONLY", "special_ids", "task_options"]
