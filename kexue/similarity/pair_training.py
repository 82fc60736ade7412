"""Train a sentence encoder on labelled pairs with CoSENT, SBERT's softmax classifier or cosine
regression: the comparison of 《CoSENT（一）：比Sentence-BERT更有效的句向量方案》.

    u, v = mean-pool(encoder(a)), mean-pool(encoder(b))
    cosent:  log(1 + Σ_{y_i > y_j} exp(20·(cos_j − cos_i)))          (kexue.losses.cosent)
    sbert:   CE(softmax(W [u; v; |u − v|]), y)                         (kexue.losses.sbert)
    cosine:  mean((cos(u, v) − y / y_max)²)

Whatever the loss, the model is *used* the same way: sentence vector = normalised mean pooling, similarity =
cosine (SBERT's classifier is thrown away after training, as in the paper), so the three are compared
on equal terms by the Spearman correlation of cosine with the gold labels.

``kexue similarity --train FILE --dev FILE --loss cosent|sbert|cosine [--checkpoint DIR|minilm|zh-mini]
--out DIR`` saves an encoder folder that ``kexue embed / search / predict / evaluate`` and
``kexue.load`` use.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from kexue.data.batching import index_batches
from kexue.data.shipped import Pair
from kexue.losses import SBERTClassifier, cosent_loss, cosine_mse_loss, sbert_softmax_loss
from kexue.heads.pooling import pool
from kexue.models.pretrained import embed
from kexue.text.tokenizer import Tokenizer, pad_batch
from kexue.similarity.evaluate import evaluate_pairs

LOSSES = ("cosent", "sbert", "cosine")


class PairEncoder(nn.Module):
    """The encoder plus, for SBERT, its training-only classifier (so one optimizer sees both)."""

    def __init__(self, encoder: nn.Module, loss: str, labels: Sequence[float]):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.encoder, self.loss = encoder, loss
        self.head = None
        if loss == "sbert":
            bad = sorted({y for y in labels if y != int(y) or y < 0})
            if bad:
                raise ValueError(f"--loss sbert needs integer class labels 0, 1, …; found {bad[:5]}")
            self.head = SBERTClassifier(encoder.config.hidden_size, max(2, int(max(labels)) + 1))
        self.y_max = max(1.0, max(labels))  # cosine regression: labels rescaled to [0, 1]

    def vectors(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        return pool(h, batch["attention_mask"], "mean")

    def forward(self, a: dict[str, Tensor], b: dict[str, Tensor], labels: Tensor) -> Tensor:
        u, v = self.vectors(a), self.vectors(b)
        if self.loss == "cosent":
            return cosent_loss(u, v, labels)
        if self.loss == "sbert":
            return sbert_softmax_loss(u, v, labels.round().long(), self.head)
        return cosine_mse_loss(u, v, labels / self.y_max)


def train_pair_encoder(encoder: nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair], loss: str = "cosent",
                       steps: int | None = None, epochs: int = 1, batch_size: int = 32, lr: float = 2e-5,
                       maxlen: int = 64, seed: int = 0, dev: Sequence[Pair] | None = None,
                       eval_every: int | None = None, progress: bool = True) -> dict[str, list]:
    """Fine-tune ``encoder`` through :func:`kexue.train.fit` (AdamW, 10 % warm-up, linear decay,
    clip 1). With ``dev``, the Spearman of cosine on it is recorded every ``eval_every`` updates and
    at the end (``history["eval"]``: ``{"step", "spearman"}``)."""
    from kexue.optim import WarmupLinear, lambda_lr
    from kexue.train.loop import fit

    if not pairs:
        raise ValueError("no training pairs")
    device = next(encoder.parameters()).device  # batches and the SBERT head follow the model (CPU or GPU)
    module = PairEncoder(encoder, loss, [p.score for p in pairs]).to(device)
    enc = [(tokenizer.encode(p.a, maxlen=maxlen), tokenizer.encode(p.b, maxlen=maxlen), p.score) for p in pairs]
    per_epoch = math.ceil(len(enc) / batch_size)
    total = steps or epochs * per_epoch

    def epoch_batches(epoch: int) -> list[list[int]]:
        return index_batches(len(enc), batch_size, seed + epoch)

    def step(_, idx: list[int]) -> Tensor:
        a = pad_batch([enc[i][0] for i in idx], tokenizer.pad_id)
        b = pad_batch([enc[i][1] for i in idx], tokenizer.pad_id)
        to = lambda batch: {k: v.to(device) for k, v in batch.items()}
        return module(to(a), to(b), torch.tensor([enc[i][2] for i in idx], dtype=torch.float32, device=device))

    def spearman_on_dev(state) -> dict:
        return {"spearman": evaluate_pairs(lambda texts: embed(encoder, tokenizer, texts, maxlen=maxlen), dev)}

    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.01)
    sched = lambda_lr(opt, WarmupLinear(max(1, total // 10), total))
    module.train()
    history = fit(module, step, epoch_batches, optimizer=opt, steps=total, scheduler=sched, clip_norm=1.0,
                  callbacks=[spearman_on_dev] if dev else (), eval_every=eval_every, progress=progress, seed=seed,
                  desc=f"{loss} pairs")
    encoder.eval()
    return history
