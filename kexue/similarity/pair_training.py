"""Train a sentence encoder on labelled pairs with CoSENT, SBERT's softmax classifier or cosine
regression: the comparison of 《CoSENT（一）：比Sentence-BERT更有效的句向量方案》.

    u, v = mean-pool(encoder(a)), mean-pool(encoder(b))
    cosent:  log(1 + Σ_{y_i > y_j} exp(20·(cos_j − cos_i)))          (kexue.losses.cosent)
    sbert:   CE(softmax(W [u; v; |u − v|]), y)                         (kexue.losses.sbert)
    cosine:  mean((cos(u, v) − y / y_max)²)

Whatever the loss, the model is *used* the same way: sentence vector = normalised mean pooling, similarity =
cosine (SBERT's classifier is thrown away after training, as in the paper), so the three are compared
on equal terms by the Spearman correlation of cosine with the gold labels.

:func:`train_pair_encoder` is the one trainer of a sentence encoder on pairs: ``kexue similarity --train FILE
--dev FILE --loss cosent|sbert|cosine [--checkpoint DIR|minilm|zh-mini] --out DIR`` (an encoder folder that
``kexue embed / search / predict / evaluate`` and ``kexue.load`` use) and, on a wall-clock budget with
batches of similar length, :func:`kexue.similarity.finetune.finetune_cosent` (the demo) both run it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from kexue.data.batching import count_batches, index_batches, length_batches
from kexue.data.shipped import Pair
from kexue.losses import SBERTClassifier, cosent_loss, cosine_mse_loss, rdrop_loss, sbert_softmax_loss
from kexue.heads.pooling import pool
from kexue.models.pretrained import embed
from kexue.text.tokenizer import Tokenizer, pad_batch
from kexue.data.inputs import check_pairs
from kexue.similarity.evaluate import evaluate_pairs

LOSSES = ("cosent", "sbert", "cosine")
#: an epoch's last batch smaller than this fraction of ``batch_size`` joins the batch before it: CoSENT on one or
#: two pairs ranks at most one couple of labels, so a full update on it would be noise (every pair is still seen)
MERGE_REMAINDER = 0.5


def merge_under(batch_size: int, merge_remainder: float = MERGE_REMAINDER) -> int:
    """Pairs below which an epoch's remainder batch is merged: ``ceil(merge_remainder · batch_size)``."""
    if isinstance(merge_remainder, bool) or not 0 <= merge_remainder <= 1:
        raise ValueError(f"merge_remainder must be a fraction in [0, 1], got {merge_remainder!r}")
    return min(batch_size, int(-(-merge_remainder * batch_size // 1)))


def batches_per_epoch(n_pairs: int, batch_size: int, merge_remainder: float = MERGE_REMAINDER) -> int:
    """Updates per epoch of :func:`train_pair_encoder` over ``n_pairs`` pairs (the merged remainder included)."""
    return count_batches(n_pairs, batch_size, merge_under=merge_under(batch_size, merge_remainder))


class PairEncoder(nn.Module):
    """The encoder plus, for SBERT, its training-only classifier (so one optimizer sees both)."""

    def __init__(self, encoder: nn.Module, loss: str, labels: Sequence[float], scale: float = 20.0,
                 rdrop: float = 0.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if rdrop and loss != "sbert":
            raise ValueError(f"R-Drop (--rdrop) needs SBERT's softmax classifier (--loss sbert); {loss} has no class "
                             "distribution to compare")
        self.encoder, self.loss, self.scale, self.rdrop = encoder, loss, scale, float(rdrop)
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

    def forward(self, batch: dict[str, Tensor], labels: Tensor) -> Tensor:
        """The loss of ``n`` pairs whose ``a`` sides are the batch's first ``n`` rows and ``b`` sides the
        last ``n`` (one forward pass over both sides)."""
        n = len(labels)
        vectors = self.vectors(batch)
        u, v = vectors[:n], vectors[n:]
        if self.loss == "cosent":
            return cosent_loss(u, v, labels, self.scale)
        if self.loss == "sbert":
            if self.rdrop:  # a second dropout pass over both sides, then R-Drop on the classifier's logits
                again = self.vectors(batch)
                return rdrop_loss(self.head(u, v).float(), self.head(again[:n], again[n:]).float(),
                                  labels.round().long(), self.rdrop)
            return sbert_softmax_loss(u, v, labels.round().long(), self.head)
        return cosine_mse_loss(u, v, labels / self.y_max)


def train_pair_encoder(encoder: nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair], loss: str = "cosent",
                       steps: int | None = None, epochs: int = 1, batch_size: int = 32, lr: float = 2e-5,
                       maxlen: int = 64, seed: int = 0, dev: Sequence[Pair] | None = None,
                       eval_every: int | None = None, progress: bool = True, *, seconds: float | None = None,
                       batching: str = "shuffle", schedule: str = "linear", warmup: int | float = 0.1,
                       clip_norm: float | None = 1.0, scale: float = 20.0, freeze_token_embeddings: bool = False,
                       desc: str | None = None, callbacks: Sequence = (), layer_lr_decay: float | None = None,
                       lr_multipliers: Sequence[tuple[str, float]] = (), rdrop: float = 0.0,
                       merge_remainder: float = MERGE_REMAINDER,
                       **fit_options) -> dict[str, list]:
    """Fine-tune ``encoder`` on scored ``pairs`` through :func:`kexue.train.fit`; returns fit's history.

    Planned for ``steps`` updates (default ``epochs`` passes) and cut at ``seconds`` of wall-clock time if
    given. Each epoch's batches are the pairs shuffled with seed ``seed + epoch`` (``batching="shuffle"``)
    or grouped by similar length (``"length"``, less padding on a CPU; both from :mod:`kexue.data.batching`);
    a batch of ``n`` pairs is one forward pass over its 2n sentences, then ``loss`` on the mean-pooled vectors.
    An epoch's last batch under ``merge_remainder · batch_size`` pairs (default half a batch) joins the batch
    before it, so no update is taken on a degenerate remainder of one or two pairs (``merge_remainder=0``: the
    remainder is its own batch); :func:`batches_per_epoch` counts the updates of an epoch.
    Optimizer: :func:`kexue.optim.adamw_preset` (AdamW, weight decay 0.01, ``schedule`` with ``warmup``,
    ``clip_norm``); the defaults are ``kexue similarity``'s: 10 % warm-up, linear decay, clip 1.
    ``freeze_token_embeddings`` keeps the vocabulary matrix fixed during the run. ``layer_lr_decay`` /
    ``lr_multipliers``: per-parameter rates (:func:`kexue.optim.param_groups.layerwise_lr_groups`, names of the
    ``PairEncoder``: ``encoder.…``, ``head.…``); ``rdrop``: R-Drop's α on SBERT's classifier
    (:func:`kexue.losses.rdrop_loss`: two dropout passes). With ``dev``, the
    Spearman of cosine on it is recorded every ``eval_every`` updates and at the end (``history["eval"]``:
    ``{"step", "spearman"}``); ``callbacks`` run at the same points after it. Other keyword arguments go
    to ``fit`` (``checkpoint_dir``, ``resume``, ``grad_accum``, ``ema``, ``bf16``, ``settings``,
    ``state_objects`` ...). The encoder is left in eval mode."""
    from kexue.io import fingerprint
    from kexue.optim.preset import adamw_preset
    from kexue.train.loop import fit

    if not pairs:
        raise ValueError("no training pairs")
    if batching not in ("shuffle", "length"):
        raise ValueError(f"batching must be 'shuffle' or 'length', got {batching!r}")
    check_pairs([p.a for p in pairs], [p.b for p in pairs], [p.score for p in pairs])
    device = next(encoder.parameters()).device  # batches and the SBERT head follow the model (CPU or GPU)
    module = PairEncoder(encoder, loss, [p.score for p in pairs], scale, rdrop).to(device)
    enc = [(tokenizer.encode(p.a, maxlen=maxlen), tokenizer.encode(p.b, maxlen=maxlen)) for p in pairs]
    labels = torch.tensor([float(p.score) for p in pairs], dtype=torch.float32)
    lengths = [len(a[0]) + len(b[0]) for a, b in enc]

    under = merge_under(batch_size, merge_remainder) if isinstance(batch_size, int) and batch_size > 0 else 0

    def epoch_batches(epoch: int) -> list[list[int]]:
        if batching == "length":
            return length_batches(lengths, batch_size, seed + epoch, merge_under=under)
        return index_batches(len(enc), batch_size, seed + epoch, merge_under=under)

    def step(m: nn.Module, idx: list[int]) -> Tensor:
        batch = pad_batch([enc[i][0] for i in idx] + [enc[i][1] for i in idx], tokenizer.pad_id)
        return m({k: v.to(device) for k, v in batch.items()}, labels[idx].to(device))

    def spearman_on_dev(state) -> dict:
        return {"spearman": evaluate_pairs(lambda texts: embed(encoder, tokenizer, texts, maxlen=maxlen), dev)}

    total = steps or epochs * len(epoch_batches(0))  # the batch maker checks batch_size
    settings = {"data": fingerprint([(p.a, p.b, float(p.score)) for p in pairs]), "loss": loss, "scale": scale,
                "batch_size": batch_size, "maxlen": maxlen, "batching": batching, "merge_under": under,
                "freeze_token_embeddings": freeze_token_embeddings, **fit_options.pop("settings", {})}
    frozen = [p for n, p in encoder.named_parameters()
              if freeze_token_embeddings and n.endswith("embeddings.token.weight") and p.requires_grad]
    module.train()
    try:
        for p in frozen:
            p.requires_grad_(False)
        params = [p for p in module.parameters() if p.requires_grad]
        if layer_lr_decay is not None or lr_multipliers:
            from kexue.optim.param_groups import layerwise_lr_groups

            params = layerwise_lr_groups(module, lr, layer_lr_decay, lr_multipliers)
        preset = adamw_preset(params, lr, total, warmup=warmup,
                              weight_decay=0.01, schedule=schedule, clip_norm=clip_norm)
        return fit(module, step, epoch_batches, steps=total, max_seconds=seconds,
                   callbacks=([spearman_on_dev] if dev else []) + list(callbacks), eval_every=eval_every,
                   progress=progress, seed=seed, desc=desc or f"{loss} pairs", **preset.fit_options(settings),
                   **fit_options)
    finally:
        module.eval()
        for p in frozen:
            p.requires_grad_(True)
