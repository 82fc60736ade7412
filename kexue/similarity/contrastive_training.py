r"""Train a sentence encoder contrastively: InfoNCE on (anchor, positive[, hard negatives]) and unsupervised
SimCSE on plain sentences — 《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》 (SimCSE: Gao, Yao & Chen 2021).

With :math:`u = \mathrm{meanpool}(\mathrm{encoder}(\cdot))` and :math:`s = 1/\tau` (default 20, τ = 0.05, the
post's and SimCSE's),

    infonce:  L = −1/N Σ_i log( e^{s·cos(a_i, p_i)} / (Σ_j e^{s·cos(a_i, p_j)} + Σ_{j,l} e^{s·cos(a_i, n_{j,l})}) )
    simcse:   the batch x_1..x_N encoded twice with dropout on (one forward pass over 2N rows, so each row
              draws its own dropout mask); each of the 2N vectors must pick its twin among the other 2N−1
              (``form="post"``, the post's bert4keras loss) — :func:`kexue.losses.infonce.simcse_loss`.

Every other row's positive (and every row's negatives) is a negative of :math:`a_i`: in-batch negatives, so a
bigger batch gives more negatives. Two lines of a batch holding the same positive are false negatives of each
other (the loss still counts them); hard negatives come from :func:`kexue.similarity.mining.mine_hard_negatives`.
The encoder is used exactly like one trained on pairs (:mod:`kexue.similarity.pair_training`): normalised
mean pooling and cosine, so ``kexue similarity --loss infonce|simcse`` saves the same encoder folder.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from kexue.data.batching import index_batches
from kexue.data.triplets import Triplet
from kexue.heads.pooling import pool
from kexue.losses.infonce import infonce_loss, simcse_loss
from kexue.text.tokenizer import Tokenizer, pad_batch

CONTRASTIVE_LOSSES = ("infonce", "simcse")
SCALE = 20.0  # 1/τ with τ = 0.05


class ContrastiveEncoder(nn.Module):
    """The encoder and its contrastive loss over one padded batch of ``rows`` sentences."""

    def __init__(self, encoder: nn.Module, loss: str, scale: float = SCALE, gather: bool = False):
        super().__init__()
        if loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"unknown contrastive loss {loss!r}; choose one of {', '.join(CONTRASTIVE_LOSSES)}")
        if not scale > 0:
            raise ValueError(f"scale (1/temperature) must be > 0, got {scale}")
        self.encoder, self.loss, self.scale, self.gather = encoder, loss, scale, gather

    def vectors(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        return pool(h, batch["attention_mask"], "mean")

    def forward(self, batch: dict[str, Tensor], n: int, negatives: int = 0) -> Tensor:
        """``simcse``: rows ``[x_1..x_n, x_1..x_n]``; ``infonce``: rows ``[a_1..a_n, p_1..p_n, n_{1,1}..n_{n,1},
        …, n_{1,k}..n_{n,k}]`` (``negatives`` = k)."""
        v = self.vectors(batch)
        if self.loss == "simcse":
            return simcse_loss(v[:n], v[n:2 * n], self.scale, "post", self.gather)
        negs = v[2 * n:].reshape(negatives, n, -1).transpose(0, 1) if negatives else None
        return infonce_loss(v[:n], v[n:2 * n], negs, self.scale, self.gather)


def train_contrastive_encoder(encoder: nn.Module, tokenizer: Tokenizer, examples: Sequence[Triplet] | Sequence[str],
                              loss: str = "infonce", steps: int | None = None, epochs: int = 1,
                              batch_size: int = 64, lr: float = 2e-5, maxlen: int = 64, seed: int = 0,
                              progress: bool = True, *, scale: float = SCALE, warmup: int | float = 0.1,
                              schedule: str = "linear", clip_norm: float | None = 1.0, gather: bool = False,
                              desc: str | None = None, callbacks: Sequence = (), eval_every: int | None = None,
                              **fit_options) -> dict[str, list]:
    """Fine-tune ``encoder`` with ``loss`` through :func:`kexue.train.fit`; returns fit's history.

    ``examples``: :class:`~kexue.data.triplets.Triplet` s for ``infonce`` (the same number of negatives each),
    sentences for ``simcse``. Each epoch's batches are the examples shuffled with seed ``seed + epoch``; a last
    batch of one example is dropped (InfoNCE needs another row's positive as a negative). Optimizer:
    :func:`kexue.optim.adamw_preset` (AdamW, weight decay 0.01, ``schedule`` with ``warmup``, ``clip_norm``).
    ``gather``: in-batch negatives across processes under torchrun (:mod:`kexue.layers.distributed`). Other
    keyword arguments go to ``fit`` (``checkpoint_dir``, ``resume``, ``settings``, ``log_dir`` ...). The
    encoder is left in eval mode."""
    from kexue.io import fingerprint
    from kexue.optim.preset import adamw_preset
    from kexue.train.loop import fit

    if loss not in CONTRASTIVE_LOSSES:
        raise ValueError(f"unknown contrastive loss {loss!r}; choose one of {', '.join(CONTRASTIVE_LOSSES)}")
    if len(examples) < 2:
        raise ValueError(f"{loss} needs at least 2 training examples (in-batch negatives), got {len(examples)}")
    if loss == "simcse":
        if not all(isinstance(s, str) and s.strip() for s in examples):
            raise ValueError("simcse trains on non-empty sentences (str)")
        texts = [[s] for s in examples]
        k = 0
    else:
        if not all(isinstance(t, Triplet) for t in examples):
            raise ValueError("infonce trains on Triplet(anchor, positive, negatives) examples")
        k = len(examples[0].negatives)
        bad = next((i for i, t in enumerate(examples) if len(t.negatives) != k), None)
        if bad is not None:
            raise ValueError(f"example {bad} has {len(examples[bad].negatives)} negatives, example 0 has {k}: "
                             "every example needs the same number")
        texts = [[t.anchor, t.positive, *t.negatives] for t in examples]
    if batch_size < 2:
        raise ValueError(f"{loss} needs batch_size ≥ 2 (in-batch negatives), got {batch_size}")
    device = next(encoder.parameters()).device
    module = ContrastiveEncoder(encoder, loss, scale, gather).to(device)
    enc = [[tokenizer.encode(s, maxlen=maxlen) for s in row] for row in texts]

    def epoch_batches(epoch: int) -> list[list[int]]:
        return [b for b in index_batches(len(enc), batch_size, seed + epoch) if len(b) > 1]

    def step(m: nn.Module, idx: list[int]) -> Tensor:
        cols = 2 if loss == "simcse" else 2 + k
        # column-major: all anchors, all positives, then each negative column (simcse: each sentence twice)
        rows = [enc[i][0 if loss == "simcse" else c] for c in range(cols) for i in idx]
        batch = pad_batch(rows, tokenizer.pad_id)
        return m({key: v.to(device) for key, v in batch.items()}, len(idx), k)

    total = steps or epochs * len(epoch_batches(0))
    settings = {"data": fingerprint(texts), "loss": loss, "scale": scale, "batch_size": batch_size,
                "maxlen": maxlen, "negatives": k, **fit_options.pop("settings", {})}
    module.train()
    try:
        preset = adamw_preset([p for p in module.parameters() if p.requires_grad], lr, total, warmup=warmup,
                              weight_decay=0.01, schedule=schedule, clip_norm=clip_norm)
        return fit(module, step, epoch_batches, steps=total, callbacks=list(callbacks), eval_every=eval_every,
                   progress=progress, seed=seed, desc=desc or f"{loss} encoder", **preset.fit_options(settings),
                   **fit_options)
    finally:
        module.eval()


__all__ = ["CONTRASTIVE_LOSSES", "ContrastiveEncoder", "SCALE", "train_contrastive_encoder"]
