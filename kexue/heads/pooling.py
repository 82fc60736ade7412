r"""Sentence vectors from token vectors: :func:`pool`, the one pooling every kexue caller uses.

With :math:`h_t` the last layer's vector of token :math:`t`, :math:`m_t \in \{0, 1\}` the attention mask
(1 = real token), :math:`f` / :math:`l` the first / last real token of the row:

.. math::
    \text{cls} = h_f \qquad
    \text{mean} = \frac{\sum_t m_t h_t}{\sum_t m_t} \qquad
    \text{max}_d = \max_{t:\,m_t = 1} h_{t,d} \qquad
    \text{last-token} = h_l

    \text{weighted-mean} = \frac{\sum_t w_t m_t h_t}{\sum_t w_t m_t},\ w_t = t - f + 1 \qquad
    \text{first-last-avg} = \tfrac12\big(\text{mean}(h^{(1)}) + \text{mean}(h^{(L)})\big)

* ``mean`` is sentence-transformers' recipe (all-MiniLM-L6-v2) and the pooling the CoSENT posts train
  (《CoSENT（一）：比Sentence-BERT更有效的句向量方案》); ``cls`` is BERT's / SimBERT's [CLS] vector.
* ``first-last-avg`` averages the mean of the first Transformer layer's output :math:`h^{(1)}` (not the
  embeddings) and of the last one's, the pooling BERT-whitening's Chinese evaluation found best
  (《无监督语义相似度哪家强？我们做了个比较全面的评测》); it needs every layer's states.
* ``weighted-mean`` (SGPT) weights later tokens more, ``last-token`` reads the one token a causal LM has
  seen the whole sentence at; both, like ``cls``, find the real tokens under left or right padding.
* ``pooler`` is the model's pooler output :math:`\tanh(W h_{[CLS]} + b)` (BERT's NSP pooler, SimBERT's
  retrieval vector); it needs a model built ``with_pool``.

The names are sentence-transformers' ``Pooling`` modes (``lasttoken`` / ``weightedmean`` are accepted as
spelled there) and the results equal that module's on the same token vectors. Half-precision inputs are
summed in fp32 and returned in their own dtype. A row whose mask is all zero (an empty sequence) has no
sentence vector: it is an error, not a NaN or a silent zero.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

MODES = ("mean", "cls", "first-last-avg", "max", "last-token", "weighted-mean", "pooler")
ALIASES = {"lasttoken": "last-token", "weightedmean": "weighted-mean"}  # sentence-transformers' spellings


def check_mode(mode: str) -> str:
    """The canonical name of pooling ``mode``; a ValueError naming it and the known ones otherwise."""
    if not isinstance(mode, str) or ALIASES.get(mode, mode) not in MODES:
        raise ValueError(f"unknown pooling {mode!r}; known: {', '.join(MODES)}")
    return ALIASES.get(mode, mode)


def _check_mask(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    if hidden.dim() != 3:
        raise ValueError(f"pooling needs token vectors [batch, length, hidden], got shape {tuple(hidden.shape)}")
    if attention_mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, the token vectors "
                         f"{tuple(hidden.shape[:2])} (batch, length)")
    if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()) and attention_mask.numel():
        empty = (attention_mask == 0).all(1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"pooling: attention_mask rows {rows[:10]} are all zero: an empty sequence has "
                             "no sentence vector")
    return attention_mask


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _mean(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    acc = _accumulation(hidden.dtype)
    total = (hidden * m).sum(1, dtype=acc)
    return (total / m.sum(1, dtype=acc).clamp(min=1e-9)).to(hidden.dtype)


def _gather(hidden: Tensor, index: Tensor) -> Tensor:
    return hidden.gather(1, index.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)


def _first_real(mask: Tensor) -> Tensor:
    return (mask != 0).int().argmax(1)


def _last_real(mask: Tensor) -> Tensor:
    return mask.shape[1] - 1 - (mask != 0).int().flip(1).argmax(1)


def _parts(hidden_or_output) -> tuple[Tensor, Sequence[Tensor] | None, Tensor | None]:
    """(last layer, every layer or None, pooler output or None) of what :func:`pool` was given."""
    if isinstance(hidden_or_output, Tensor):
        return hidden_or_output, None, None
    if isinstance(hidden_or_output, (list, tuple)):
        if not hidden_or_output or not all(isinstance(h, Tensor) for h in hidden_or_output):
            raise TypeError("pool: a sequence input must be the per-layer states (embeddings first), all tensors")
        return hidden_or_output[-1], hidden_or_output, None
    if hasattr(hidden_or_output, "hidden"):
        return (hidden_or_output.hidden, getattr(hidden_or_output, "all_hidden", None),
                getattr(hidden_or_output, "pooled", None))
    raise TypeError(f"pool takes token vectors [B, L, H], the per-layer states or a model output with .hidden, "
                    f"got {type(hidden_or_output).__name__}")


def pool(hidden_or_output, attention_mask: Tensor | None, mode: str = "mean") -> Tensor:
    """``[B, hidden]`` sentence vectors by pooling ``mode`` (see the module docstring).

    ``hidden_or_output``: the last layer's token vectors ``[B, L, H]``; or the per-layer states (embeddings
    first, as kexue's ``all_hidden`` or transformers' ``hidden_states``); or a model output with ``.hidden``
    (and ``.all_hidden`` for ``first-last-avg``, run with ``output_hidden_states=True``; ``.pooled`` for
    ``pooler``). ``attention_mask [B, L]``: 1 for real tokens (None: every token is real)."""
    mode = check_mode(mode)
    hidden, layers, pooled = _parts(hidden_or_output)
    mask = _check_mask(hidden, attention_mask)
    if mode == "mean":
        return _mean(hidden, mask)
    if mode == "cls":
        return _gather(hidden, _first_real(mask))
    if mode == "last-token":
        return _gather(hidden, _last_real(mask))
    if mode == "max":
        return hidden.masked_fill((mask == 0).unsqueeze(-1), float("-inf")).max(1).values
    if mode == "weighted-mean":
        acc = _accumulation(hidden.dtype)
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=acc)
        w = ((positions - _first_real(mask).to(acc).unsqueeze(1)) * mask.to(acc)).unsqueeze(-1)
        return ((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)).to(hidden.dtype)
    if mode == "first-last-avg":
        if layers is None:
            raise ValueError("pooling 'first-last-avg' needs every layer's states: pass the per-layer list or the "
                             "output of a forward pass run with output_hidden_states=True")
        if len(layers) < 2:
            raise ValueError(f"pooling 'first-last-avg' needs the embeddings and at least one layer, got {len(layers)} states")
        return (_mean(layers[1], mask) + _mean(layers[-1], mask)) / 2
    # pooler
    if pooled is None:
        raise ValueError("pooling 'pooler' needs the model's pooler output: build the model with with_pool=True "
                         "and pass its output (not the token vectors)")
    return pooled


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``pool(hidden, attention_mask, "mean")``: Σ_t m_t h_t / Σ_t m_t."""
    return pool(hidden, attention_mask, "mean")


__all__ = ["ALIASES", "MODES", "check_mode", "mean_pool", "pool"]
