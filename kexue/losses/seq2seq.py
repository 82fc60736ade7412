"""Seq2seq / language-model cross entropy on the target tokens only.

    L = - Σ_t m_{t+1} log p(x_{t+1} | x_≤t) / Σ_t m_{t+1}

UniLM (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》): source and target are one sequence
``[CLS] src [SEP] tgt [SEP]`` with segment ids 0 / 1 under the prefix mask; position t predicts
token t+1 and only target tokens (segment 1, the closing [SEP] included as the end token) count.
For GPT-style dialogue the mask marks the reply tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def seq2seq_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """``logits [B, L, V]`` from the model on ``input_ids [B, L]``; ``loss_mask [B, L]`` 1 for tokens to
    predict (UniLM: ``segment_ids * attention_mask``). Mean over predicted tokens."""
    target = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="none").view_as(mask)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def target_positions(loss_mask: Tensor) -> Tensor:
    """bool ``[B, L]``: True at position t where token t + 1 is predicted (``loss_mask[:, t + 1]`` set; the last
    column predicts nothing). Passed as the model's ``logits_mask``, it limits the vocabulary projection to the
    positions the loss reads."""
    picked = torch.zeros(loss_mask.shape, dtype=torch.bool, device=loss_mask.device)
    picked[:, :-1] = loss_mask[:, 1:].bool()
    return picked


def target_loss(logits: Tensor, input_ids: Tensor, positions: Tensor) -> Tensor:
    """The same mean as :func:`seq2seq_loss`, from ``logits [N, V]`` computed only at ``positions`` (from
    :func:`target_positions`): each is scored against the token that follows it; 0 when N = 0."""
    targets = input_ids[:, 1:][positions[:, :-1]]
    return F.cross_entropy(logits.float(), targets, reduction="sum") / positions.sum().clamp(min=1)
