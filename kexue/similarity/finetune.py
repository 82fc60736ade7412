"""CoSENT fine-tuning of a sentence encoder (bi-encoder) or a cross-encoder on scored pairs.

《CoSENT（一）》: batches of (a, b, score), loss = CoSENT(cos(u, v)·20) for a bi-encoder
(:func:`finetune_cosent`, the demo's settings of the one pair trainer
:func:`kexue.similarity.pair_training.train_pair_encoder`);
《CoSENT（三）》: the same ranking loss on a cross-encoder's logit of "[CLS] a [SEP] b [SEP]".
Both run on :func:`kexue.train.fit` with :func:`kexue.optim.adamw_preset` (progress bar with total and ETA, checkpoints and exact resume with
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
from kexue.losses import cosent_cross_encoder_loss
from kexue.heads.pooling import pool
from kexue.text.tokenizer import Tokenizer, pad_batch
from kexue.data.inputs import check_pairs
from kexue.similarity.pair_training import train_pair_encoder


def _pairs_fingerprint(pairs: Sequence[Pair]) -> str:
    from kexue.io import fingerprint

    return fingerprint([(p.a, p.b, float(p.score)) for p in pairs])


def budgeted_fit(model: nn.Module, loss: Callable[[nn.Module, list[int]], Tensor], batches: list[list[int]],
                 params, lr: float = 2e-5, seconds: float | None = 120.0, max_steps: int | None = None,
                 epochs: int = 1, warmup: int = 10, progress: bool = True, desc: str = "training",
                 seed: int = 0, **fit_options) -> list[float]:
    """:func:`kexue.optim.adamw_preset` (AdamW, weight decay 0.01, warm-up ``lr·min(1, (i+1)/warmup)`` then
    constant, no clipping) over ``batches`` (cycled) for ``max_steps`` (default ``epochs`` passes) or until
    ``seconds``, through :func:`kexue.train.fit`; returns the losses. ``params`` may be groups with their
    own lr (a fresh head): the warm-up scales each group."""
    from kexue.optim.preset import adamw_preset
    from kexue.train.loop import fit

    total = max_steps or epochs * len(batches)
    preset = adamw_preset(params, lr, total, warmup=warmup, weight_decay=0.01, schedule="constant", clip_norm=None)
    options = preset.fit_options(fit_options.pop("settings", None))
    history = fit(model, loss, batches, steps=total, max_seconds=seconds, progress=progress, desc=desc, seed=seed,
                  **options, **fit_options)
    return history["loss"]


def finetune_cosent(model: nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair], seconds: float | None = 120.0,
                    batch_size: int = 32, lr: float = 2e-5, maxlen: int = 64, max_steps: int | None = None,
                    scale: float = 20.0, seed: int = 0, progress: bool = True,
                    freeze_token_embeddings: bool = True, epochs: int = 1, dev: Sequence[Pair] | None = None,
                    **fit_options) -> list[float]:
    """Bi-encoder CoSENT on mean-pooled vectors (the MiniLM recipe) on a CPU budget: the one pair trainer
    :func:`~kexue.similarity.pair_training.train_pair_encoder` with batches of similar length, warm-up over
    10 updates then a constant lr (a budget of ``seconds`` may end the run anywhere), no clipping; returns
    the loss of every update and leaves the model in eval mode (``dev``: Spearman curve in the run's history).

    ``freeze_token_embeddings`` keeps the vocabulary matrix fixed (half of MiniLM's weights): its dense
    gradient and AdamW update dominate a CPU step, and a few hundred pairs cannot train it anyway.
    """
    history = train_pair_encoder(model, tokenizer, pairs, "cosent", max_steps, epochs, batch_size, lr, maxlen, seed,
                                 dev, fit_options.pop("eval_every", None), progress, seconds=seconds,
                                 batching="length", schedule="constant", warmup=10, clip_norm=None, scale=scale,
                                 freeze_token_embeddings=freeze_token_embeddings, desc="CoSENT fine-tune",
                                 **fit_options)
    return history["loss"]


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
