"""Adapters that let the recipes decode with :mod:`kexue.generation` (KV cache, top-k sampling):

* :class:`DecodeView` binds the class vector of a Conditional-LayerNorm model and bans special
  tokens ([PAD]/[CLS]/[MASK]/[UNK]) from the output, without touching the weights;
* :class:`SpeakerDecoding` gives the generated tokens the responding speaker's segment id
  (DialoGPT-style dialogue alternates segment ids 0/1 by turn, the plain LM state always uses 0).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..generation import PrefixDecoding, sample


class DecodeView(nn.Module):
    """``model`` as the decoder sees it: ``cond [B, cond_dim]`` bound, ``banned`` ids at -inf."""

    def __init__(self, model: nn.Module, cond: Tensor | None = None, banned: list[int] = ()):
        super().__init__()
        self.model, self.cond, self.banned = model, cond, list(banned)
        self.application, self.config = model.application, model.config

    def forward(self, *args, **kwargs):
        out = self.model(*args, cond=self.cond, **kwargs)
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


__all__ = ["DecodeView", "SpeakerDecoding", "sample"]
