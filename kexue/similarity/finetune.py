"""CoSENT fine-tuning of a sentence encoder (bi-encoder) or a cross-encoder on scored pairs.

《CoSENT（一）》: batches of (a, b, score), loss = CoSENT(cos(u, v)·20) for a bi-encoder;
《CoSENT（三）》: the same ranking loss on a cross-encoder's logit of "[CLS] a [SEP] b [SEP]".
Both run on :func:`kexue.train.fit` (progress bar with total and ETA, checkpoints and exact resume with
``checkpoint_dir=``, grad accumulation, EMA, bf16, DDP, the non-finite guard: extra keyword arguments go
to ``fit``), planned for ``max_steps`` or ``epochs`` and optionally cut at a wall-clock budget ``seconds``
so demos fit a CPU budget.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from kexue.data.batching import length_batches  # noqa: F401  (also the old name here)
from kexue.data.shipped import Pair
from kexue.losses import cosent_cross_encoder_loss, cosent_loss
from kexue.heads.pooling import pool
from kexue.text.tokenizer import Tokenizer, pad_batch
from kexue.data.inputs import check_pairs


def _pairs_fingerprint(pairs: Sequence[Pair]) -> str:
    from kexue.io import fingerprint

    return fingerprint([(p.a, p.b, float(p.score)) for p in pairs])


def budgeted_fit(model: nn.Module, loss: Callable[[nn.Module, list[int]], Tensor], batches: list[list[int]],
                 params, lr: float = 2e-5, seconds: float | None = 120.0, max_steps: int | None = None,
                 epochs: int = 1, warmup: int = 10, progress: bool = True, desc: str = "training",
                 seed: int = 0, **fit_options) -> list[float]:
    """AdamW with linear warm-up ``lr·min(1, (i+1)/warmup)`` over ``batches`` (cycled) for ``max_steps``
    (default ``epochs`` passes) or until ``seconds``, through :func:`kexue.train.fit`; returns the losses."""
    from kexue.optim.schedules import PiecewiseLinear, lambda_lr
    from kexue.train.loop import fit

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)  # groups may carry their own lr (a fresh head)
    sched = lambda_lr(opt, PiecewiseLinear({0: 1.0 / warmup, warmup - 1: 1.0}))  # warm-up scales each group
    history = fit(model, loss, batches, optimizer=opt, steps=max_steps or epochs * len(batches), scheduler=sched,
                  max_seconds=seconds, progress=progress, desc=desc, seed=seed, **fit_options)
    return history["loss"]


def finetune_cosent(model: nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair], seconds: float | None = 120.0,
                    batch_size: int = 32, lr: float = 2e-5, maxlen: int = 64, max_steps: int | None = None,
                    scale: float = 20.0, seed: int = 0, progress: bool = True,
                    freeze_token_embeddings: bool = True, epochs: int = 1, **fit_options) -> list[float]:
    """Bi-encoder CoSENT on mean-pooled vectors (the MiniLM recipe); the model is left in eval mode.

    ``freeze_token_embeddings`` keeps the vocabulary matrix fixed (half of MiniLM's weights): its dense
    gradient and AdamW update dominate a CPU step, and a few hundred pairs cannot train it anyway.
    """
    check_pairs([p.a for p in pairs], [p.b for p in pairs], [p.score for p in pairs])
    enc = [(tokenizer.encode(p.a, maxlen=maxlen), tokenizer.encode(p.b, maxlen=maxlen)) for p in pairs]
    labels = torch.tensor([p.score for p in pairs])

    def step(m: nn.Module, idx: list[int]) -> Tensor:
        batch = pad_batch([enc[i][0] for i in idx] + [enc[i][1] for i in idx], tokenizer.pad_id)
        h = m(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        v = pool(h, batch["attention_mask"], "mean")
        return cosent_loss(v[:len(idx)], v[len(idx):], labels[idx], scale)

    batches = length_batches([len(a[0]) + len(b[0]) for a, b in enc], batch_size, seed)
    frozen = [p for n, p in model.named_parameters()
              if freeze_token_embeddings and n.endswith("embeddings.token.weight") and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    model.train()
    try:
        settings = {"data": _pairs_fingerprint(pairs), "batch_size": batch_size, "maxlen": maxlen, "scale": scale,
                    "freeze_token_embeddings": freeze_token_embeddings}
        return budgeted_fit(model, step, batches, [p for p in model.parameters() if p.requires_grad], lr, seconds,
                            max_steps, epochs, progress=progress, desc="CoSENT fine-tune", seed=seed,
                            settings={**settings, **fit_options.pop("settings", {})}, **fit_options)
    finally:
        model.eval()
        for p in frozen:
            p.requires_grad_(True)


class CrossEncoder(nn.Module):
    """Encoder + linear head on the mean-pooled tokens: one logit for "[CLS] a [SEP] b [SEP]".

    Mean pooling (not [CLS]) because the starting point, all-MiniLM-L6-v2, was trained to put its
    sentence meaning there; with a CPU-minutes budget that head start matters.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Tokenizer, maxlen: int = 128):
        super().__init__()
        self.encoder, self.tokenizer, self.maxlen = encoder, tokenizer, maxlen
        self.head = nn.Linear(encoder.config.hidden_size, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        return self.head(pool(h, batch["attention_mask"], "mean")).squeeze(-1)

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> Tensor:
        """``[len(pairs)]`` logits, batched; one cross-encoder call per pair."""
        self.eval()
        enc = [self.tokenizer.encode(a, b, maxlen=self.maxlen) for a, b in pairs]
        out = []
        for s in range(0, len(enc), batch_size):
            out.append(self(pad_batch(enc[s:s + batch_size], self.tokenizer.pad_id)))
        return torch.cat(out) if out else torch.empty(0)


def finetune_cross_encoder(ce: CrossEncoder, pairs: Sequence[Pair], seconds: float | None = 120.0,
                           batch_size: int = 32, lr: float = 3e-5, head_lr: float = 1e-3, max_steps: int | None = None,
                           seed: int = 0, progress: bool = True, epochs: int = 1, **fit_options) -> list[float]:
    """Cross-encoder CoSENT (scale 1 on logits); both orders (a, b) and (b, a) are used as examples.

    The fresh linear head gets its own larger ``head_lr``: at the encoder's lr its logits stay
    near 0 for hundreds of steps and the ranking loss sits at its chance value.
    """
    check_pairs([p.a for p in pairs], [p.b for p in pairs], [p.score for p in pairs])
    both = [(p.a, p.b, p.score) for p in pairs] + [(p.b, p.a, p.score) for p in pairs]
    enc = [ce.tokenizer.encode(a, b, maxlen=ce.maxlen) for a, b, _ in both]
    labels = torch.tensor([s for _, _, s in both])

    def step(m: nn.Module, idx: list[int]) -> Tensor:
        return cosent_cross_encoder_loss(m(pad_batch([enc[i] for i in idx], ce.tokenizer.pad_id)), labels[idx])

    batches = length_batches([len(e[0]) for e in enc], batch_size, seed)
    ce.train()
    try:
        groups = [{"params": ce.encoder.parameters(), "lr": lr}, {"params": ce.head.parameters(), "lr": head_lr}]
        settings = {"data": _pairs_fingerprint(pairs), "batch_size": batch_size, "maxlen": ce.maxlen}
        return budgeted_fit(ce, step, batches, groups, lr, seconds, max_steps, epochs, progress=progress,
                            desc="cross-encoder CoSENT", seed=seed,
                            settings={**settings, **fit_options.pop("settings", {})}, **fit_options)
    finally:
        ce.eval()
