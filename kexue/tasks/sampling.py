"""Adapters that let the recipes decode with :mod:`kexue.generation` (KV cache, top-k sampling):

* :class:`DecodeView` binds the class vector of a Conditional-LayerNorm model and bans special
  tokens ([PAD]/[CLS]/[MASK]/[UNK]) from the output, without touching the weights;
* :class:`SpeakerDecoding` gives the generated tokens the responding speaker's segment id
  (DialoGPT-style dialogue alternates segment ids 0/1 by turn, the plain LM state always uses 0).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..generation import PrefixDecoding, beam_search, greedy, sample


class DecodeView(nn.Module):
    """``model`` as the decoder sees it: ``cond [B, cond_dim]`` bound, ``banned`` ids at -inf."""

    def __init__(self, model: nn.Module, cond: Tensor | None = None, banned: list[int] = ()):
        super().__init__()
        self.model, self.cond, self.banned = model, cond, list(banned)
        self.application, self.config = model.application, model.config

    def forward(self, input_ids, *args, **kwargs):
        cond = self.cond
        if cond is not None and cond.shape[0] == 1 and input_ids.shape[0] > 1:
            cond = cond.expand(input_ids.shape[0], -1)  # one class for every row (e.g. the beams of one input)
        out = self.model(input_ids, *args, cond=cond, **kwargs)
        if self.banned:
            out.logits = out.logits.index_fill(-1, torch.tensor(self.banned), float("-inf"))
        return out


class SpeakerDecoding(PrefixDecoding):
    """A causal-LM decoding state whose new tokens carry segment id ``speaker``."""

    def __init__(self, model, input_ids: Tensor, segment_ids: Tensor, speaker: int):
        super().__init__(model, input_ids, None, segment_ids)
        self.speaker = speaker

    def prefill(self) -> Tensor:
        logits = super().prefill()
        self.new_segment = torch.full_like(self.new_segment, self.speaker)
        return logits


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


__all__ = ["DecodeView", "SpeakerDecoding", "decode", "sample"]
