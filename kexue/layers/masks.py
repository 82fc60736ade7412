"""Attention masks as boolean tensors, ``True`` = the query may attend to the key.

All builders return shapes that broadcast to ``[batch, heads, q_len, k_len]`` and combine with
``&``. Three patterns cover bert4keras's applications (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》):

* bidirectional (encoder): every token sees every non-padding token;
* causal (language model): token i sees tokens j <= i;
* UniLM (seq2seq): with segment ids s (0 = source, 1 = target) and c = cumsum(s),
  token i sees token j iff c_j <= c_i, i.e. the source sees itself, each target token sees the
  source plus the targets up to itself.
"""
from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(attention_mask: Tensor) -> Tensor:
    """``[B, L]`` 1/0 (or bool) key mask -> ``[B, 1, 1, L]`` bool."""
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None, device=None) -> Tensor:
    """``[1, 1, q_len, k_len]``: query i (at absolute position k_len - q_len + i) sees keys <= it."""
    k_len = q_len if k_len is None else k_len
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos <= q_pos)[None, None]


def unilm_mask(segment_ids: Tensor, q_len: int | None = None) -> Tensor:
    """``[B, 1, q_len, L]`` UniLM prefix mask from ``[B, L]`` segment ids (0 source, 1 target).

    ``q_len`` selects the last ``q_len`` rows, for incremental decoding with a KV cache.
    """
    c = torch.cumsum(segment_ids.long(), dim=1)
    m = c[:, None, :] <= c[:, :, None]
    if q_len is not None:
        m = m[:, -q_len:, :]
    return m[:, None]


def build_mask(
    application: str,
    attention_mask: Tensor | None,
    segment_ids: Tensor | None,
    q_len: int,
    k_len: int,
    device=None,
) -> Tensor | None:
    """The mask for an application (``encoder`` | ``lm`` | ``unilm``) combined with padding."""
    if application == "encoder" or (application == "lm" and q_len == 1):
        mask = None  # a single new token may see every cached key: no tensor to build per step
    elif application == "lm":
        mask = causal_mask(q_len, k_len, device=device)
    elif application == "unilm":
        if segment_ids is None:
            raise ValueError("application='unilm' needs segment_ids (0 = source, 1 = target)")
        if segment_ids.shape[1] != k_len:
            raise ValueError(f"unilm segment_ids must cover all {k_len} positions (cache included)")
        mask = unilm_mask(segment_ids, q_len)
    else:
        raise ValueError(f"unknown application {application!r}: encoder, lm or unilm")
    if attention_mask is not None:
        if attention_mask.shape[1] != k_len:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} keys, expected {k_len}")
        pad = padding_mask(attention_mask)
        mask = pad if mask is None else mask & pad
    return mask
