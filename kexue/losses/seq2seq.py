"""Seq2seq / language-model cross entropy on the target tokens only.

    L = - Σ_t m_{t+1} log p(x_{t+1} | x_≤t) / Σ_t m_{t+1}

UniLM (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》): source and target are one sequence
``[CLS] src [SEP] tgt [SEP]`` with segment ids 0 / 1 under the prefix mask; position t predicts
token t+1 and only target tokens (segment 1, the closing [SEP] included as the end token) count.
For GPT-style dialogue the mask marks the reply tokens.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def seq2seq_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """``logits [B, L, V]`` from the model on ``input_ids [B, L]``; ``loss_mask [B, L]`` 1 for tokens to
    predict (UniLM: ``segment_ids * attention_mask``). Mean over predicted tokens."""
    target = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="none").view_as(mask)
    return (nll * mask).sum() / mask.sum().clamp(min=1)
