"""The recipes' decoding options in one place (:func:`decode`) and the ids they never generate.

Conditional-LayerNorm vectors, banned ids and the responding speaker's segment id are per-request
state of :mod:`kexue.generation`'s decoding states (``cond=``, ``banned_ids=``, ``new_segment=``).
"""
from __future__ import annotations

import torch

from kexue.generation import beam_search, greedy, sample


def special_ids(tokenizer) -> list[int]:
    """[PAD] / [CLS] / [MASK] / [UNK]: tokens a generated text never contains."""
    return [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id]


def decode(state, max_new_tokens: int, eos_id: int, min_new_tokens: int = 0, num_samples: int = 1,
           num_beams: int | None = None, top_k: int | None = None, top_p: float | None = None,
           temperature: float = 1.0, seed: int = 0, do_sample: bool = True) -> list[list[int]]:
    """The recipes' decoding options in one place: beam search (``num_beams`` > 1, the ``num_samples``
    best beams), greedy (``do_sample=False``) or sampling with a fresh generator seeded ``seed``
    (same seed, same text)."""
    if num_beams and num_beams > 1:
        if num_samples > num_beams:
            raise ValueError(f"num_samples={num_samples} exceeds num_beams={num_beams}")
        return beam_search(state, max_new_tokens, eos_id, num_beams, min_new_tokens, num_return=num_samples)
    if not do_sample:
        if num_samples > 1:
            raise ValueError("greedy decoding gives one text: use sampling or num_beams for num_samples > 1")
        return greedy(state, max_new_tokens, eos_id, min_new_tokens)
    gen = torch.Generator().manual_seed(seed)
    return sample(state, max_new_tokens, eos_id, min_new_tokens, n=num_samples, top_k=top_k, top_p=top_p,
                  temperature=temperature, generator=gen)


__all__ = ["decode", "sample", "special_ids"]
