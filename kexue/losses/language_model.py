r"""Language-model cross-entropies: next-token (causal LM, UniLM seq2seq, dialogue replies, poems) and
masked-LM, the one home of both for every kexue trainer and scorer.

.. math::
    \text{next token:}\quad \mathcal{L} = -\frac{\sum_t m_{t+1} \log p(x_{t+1} \mid x_{\le t})}{\sum_t m_{t+1}}
    \qquad
    \text{masked LM:}\quad \mathcal{L} = -\frac{1}{|M|}\sum_{i \in M} \log p(x_i \mid \tilde x)

Next token: position t predicts token t + 1, and ``loss_mask`` (shaped like ``input_ids``) marks the tokens
to predict. UniLM (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》) puts source and target in one
sequence ``[CLS] src [SEP] tgt [SEP]`` with segment ids 0 / 1 under the prefix mask, and only the target
tokens count (``loss_mask = (segment_ids == 1) & attention_mask``, the closing [SEP] included as the end
token); a causal LM counts every real token; a dialogue, the reply turns. Masked LM (BERT, the
whole-word-masking pretraining of "Keras:Tensorflow的黄金标准"): ``labels`` hold the original token at the
masked positions :math:`M` and :data:`IGNORE` elsewhere — transformers' ``labels`` convention, so
``masked_lm_loss`` equals ``BertForMaskedLM``'s loss and ``next_token_loss`` with ``labels = input_ids``
masked to ``IGNORE`` equals ``GPT2LMHeadModel``'s.

Both take the full logits ``[B, L, V]`` or only the rows a loss reads, ``[N, V]`` (the model run with
``logits_mask=next_token_positions(loss_mask)`` / ``labels != IGNORE``: the vocabulary projection at ~15 % of
the positions costs ~15 % as much); the two give the same number. Cross-entropy is computed in fp32.
``reduction``: ``"mean"`` over the predicted tokens (0, not 0/0 = NaN, when there is none), ``"sum"``, or
``"none"``: ``[B, L]`` per-token losses at the predicted tokens, 0 elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # label of a position that is not predicted (transformers' ignore_index)
REDUCTIONS = ("mean", "sum", "none")


def next_token_positions(loss_mask: Tensor) -> Tensor:
    """bool ``[B, L]``: True at position t where token t + 1 is predicted (``loss_mask[:, t + 1]`` set; the last
    column predicts nothing). Passed as the model's ``logits_mask``, it limits the vocabulary projection to the
    positions :func:`next_token_loss` reads."""
    picked = torch.zeros(loss_mask.shape, dtype=torch.bool, device=loss_mask.device)
    picked[:, :-1] = loss_mask[:, 1:].bool()
    return picked


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _reduce(logits: Tensor, targets: Tensor, where: Tensor, reduction: str, name: str) -> Tensor:
    """Cross-entropy of ``logits`` (full ``[B, L, V]`` or the ``[N, V]`` rows at ``where``) against ``targets``
    ``[N]``, reduced; ``where`` is the bool ``[B, L]`` of the scored rows, the layout of ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: unknown reduction {reduction!r}; known: {', '.join(REDUCTIONS)}")
    if logits.dim() == 3:
        if logits.shape[:2] != where.shape:
            raise ValueError(f"{name}: logits {tuple(logits.shape)} do not match the tokens {tuple(where.shape)}")
        logits = logits[where]
    elif logits.dim() != 2:
        raise ValueError(f"{name}: logits must be [batch, length, vocab] or [positions, vocab], "
                         f"got {tuple(logits.shape)}")
    elif not _tracing() and logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{name}: {logits.shape[0]} rows of logits for {targets.shape[0]} predicted tokens: "
                         "[positions, vocab] logits must come from the model run with the matching logits_mask")
    if reduction == "none":
        out = torch.zeros(where.shape, dtype=torch.float32, device=logits.device)
        out[where] = F.cross_entropy(logits.float(), targets, reduction="none")
        return out
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    return total if reduction == "sum" else total / where.sum().clamp(min=1)


def next_token_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor | None = None,
                    reduction: str = "mean") -> Tensor:
    """Next-token cross-entropy of ``input_ids [B, L]`` (see the module docstring). ``loss_mask [B, L]``: 1 at
    the tokens to predict (default: every token after the first); ``logits``: ``[B, L, V]`` from the model on
    ``input_ids``, or ``[N, V]`` at ``next_token_positions(loss_mask)``. ``"none"`` lays the per-token losses
    out at the predicted tokens."""
    if input_ids.dim() != 2:
        raise ValueError(f"next_token_loss: input_ids must be [batch, length], got {tuple(input_ids.shape)}")
    if loss_mask is None:
        loss_mask = torch.ones_like(input_ids, dtype=torch.bool)
    elif loss_mask.shape != input_ids.shape:
        raise ValueError(f"next_token_loss: loss_mask {tuple(loss_mask.shape)} is not shaped like input_ids "
                         f"{tuple(input_ids.shape)}")
    positions = next_token_positions(loss_mask)
    targets = input_ids[:, 1:][positions[:, :-1]]
    loss = _reduce(logits, targets, positions, reduction, "next_token_loss")
    if reduction != "none":
        return loss
    out = torch.zeros_like(loss)  # from the predicting position t to the predicted token t + 1
    out[:, 1:] = loss[:, :-1]
    return out


def masked_lm_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Masked-LM cross-entropy: ``labels [B, L]`` hold the token to predict, :data:`IGNORE` elsewhere;
    ``logits``: ``[B, L, V]``, or ``[N, V]`` at ``labels != IGNORE`` (the model's ``logits_mask``)."""
    if labels.dim() != 2:
        raise ValueError(f"masked_lm_loss: labels must be [batch, length], got {tuple(labels.shape)}")
    picked = labels != IGNORE
    return _reduce(logits, labels[picked], picked, reduction, "masked_lm_loss")


# The names of kexue.losses.seq2seq, which this module replaces.
seq2seq_loss = next_token_loss
target_positions = next_token_positions


def target_loss(logits: Tensor, input_ids: Tensor, positions: Tensor) -> Tensor:
    """:func:`next_token_loss` given the predicting ``positions`` (:func:`next_token_positions`) instead of
    the predicted tokens."""
    loss_mask = torch.zeros_like(positions)
    loss_mask[:, 1:] = positions[:, :-1]
    return next_token_loss(logits, input_ids, loss_mask)


__all__ = ["IGNORE", "masked_lm_loss", "next_token_loss", "next_token_positions"]
