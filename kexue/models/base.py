"""The Transformer skeleton every family shares, after bert4keras's ``Transformer``.

A forward pass is ``apply_embeddings -> apply_main_layers -> apply_final_layers``; a family
subclass only says how each stage is built and how its weight names map to the HF layout
(``hf_rules``: pairs of regular expressions, kexue name <-> HF name, ``{i}`` for the layer index).
``application`` picks the attention mask: ``encoder`` (bidirectional), ``lm`` (causal) or ``unilm``
(prefix; see :mod:`kexue.layers.masks`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import KVCache, build_mask
from .config import TransformerConfig


@dataclass
class TransformerOutput:
    hidden: Tensor  # [B, L, hidden] last layer
    pooled: Tensor | None = None  # [B, hidden] pooler output ([CLS] -> dense -> tanh), if built
    logits: Tensor | None = None  # [B, L, vocab] MLM / LM logits, if built
    all_hidden: list[Tensor] | None = None  # embeddings + every layer, if asked for


class Transformer(nn.Module):
    family: str = ""
    hf_prefix: str = ""  # prefix of the encoder in HF task checkpoints ("bert.", "roformer.")
    hf_rules: list[tuple[str, str]] = []  # (kexue regex, HF name template), canonical HF names
    hf_optional: tuple[str, ...] = ()  # HF names (regex) of heads a checkpoint may carry unused
    hf_ignore: tuple[str, ...] = (r".*position_ids$",)  # harmless buffers found in old checkpoints
    hf_architectures: tuple[str, str] = ("", "")  # HF class names: bare model, with MLM head

    def __init__(self, config: TransformerConfig, application: str = "encoder", with_pool: bool = False,
                 with_mlm: bool = False, cond_dim: int | None = None):
        super().__init__()
        if application not in ("encoder", "lm", "unilm"):
            raise ValueError(f"unknown application {application!r}: encoder, lm or unilm")
        config.validate()
        self.config, self.application = config, application
        self.with_pool, self.with_mlm, self.cond_dim = with_pool, with_mlm, cond_dim
        self.build()

    # -- construction, per family ---------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, cond: Tensor | None = None, cache: KVCache | None = None,
                output_hidden_states: bool = False, key_segment_ids: Tensor | None = None) -> TransformerOutput:
        """``input_ids [B, L]``; ``segment_ids`` token types (source/target for UniLM);
        ``attention_mask [B, K]`` 1 for real tokens, K = cached + new; ``cond [B, cond_dim]`` for
        Conditional LayerNorm; ``cache`` for incremental decoding (new tokens only in input_ids);
        ``key_segment_ids [B, K]``: UniLM with a cache, the segment ids of every key (the decoding
        state keeps this history; the cache holds keys and values only)."""
        past = cache.length if cache is not None else 0
        q_len = input_ids.shape[1]
        # the positions this call looks up: cached tokens count too, so decoding past the table is refused
        needed = past + q_len if position_ids is None or not position_ids.numel() else int(position_ids.max()) + 1
        if needed > self.max_positions():
            raise ValueError(
                f"input of {needed} tokens exceeds the model's {self.max_positions()} positions; "
                "truncate it (Tokenizer.encode(..., maxlen=...)) or generate fewer tokens"
            )
        if input_ids.numel() and int(input_ids.max()) >= self.config.vocab_size:
            raise ValueError(
                f"token id {int(input_ids.max())} is outside the model's vocab_size={self.config.vocab_size}: "
                "the tokenizer's vocabulary does not match the model config"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + q_len, device=input_ids.device)[None]
        if segment_ids is None:
            segment_ids = torch.zeros_like(input_ids)
        mask_segments = segment_ids if key_segment_ids is None else key_segment_ids
        mask = build_mask(self.application, attention_mask, mask_segments, q_len, past + q_len, input_ids.device)
        x = self.apply_embeddings(input_ids, segment_ids, position_ids, cond)
        hidden = [x] if output_hidden_states else None
        x = self.apply_main_layers(x, mask, position_ids, cond, cache, hidden)
        out = self.apply_final_layers(x, cond)
        out.all_hidden = hidden
        return out

    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        raise NotImplementedError

    def layer_extras(self, position_ids: Tensor) -> dict:
        """Per-forward arguments every layer receives (e.g. RoPE cos/sin)."""
        return {}

    def apply_main_layers(self, x, mask, position_ids, cond, cache, hidden) -> Tensor:
        extras = self.layer_extras(position_ids)
        for layer in self.layers:
            x = layer(x, mask, cond=cond, cache=cache, **extras)
            if hidden is not None:
                hidden.append(x)
        return x

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None) -> TransformerOutput:
        raise NotImplementedError

    # -- weight names --------------------------------------------------------------------------------
    def hf_names(self) -> dict[str, str]:
        """kexue tensor name -> canonical HF name (without the task prefix such as ``bert.``)."""
        names = {}
        for name in self.state_dict():
            for ours, theirs in self.hf_rules:
                m = re.fullmatch(ours, name)
                if m:
                    names[name] = m.expand(theirs)
                    break
            else:
                raise KeyError(f"{type(self).__name__} has no HF name for tensor {name!r}")
        return names

    def tied_names(self) -> set[str]:
        """kexue names whose tensor is shared with another (not stored twice in checkpoints)."""
        return set()
