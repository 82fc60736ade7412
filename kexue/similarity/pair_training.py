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
import random
from typing import Sequence

import torch
from torch import Tensor, nn

from ..datasets import Pair
from ..losses import SBERTClassifier, cosent_loss, cosine_mse_loss, sbert_softmax_loss
from ..pretrained import embed, mean_pool
from ..tokenizers import Tokenizer, pad_batch
from .evaluate import evaluate_pairs

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
        return mean_pool(h, batch["attention_mask"])

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
    from ..optim import WarmupLinear, lambda_lr
    from ..train import fit

    if not pairs:
        raise ValueError("no training pairs")
    device = next(encoder.parameters()).device  # batches and the SBERT head follow the model (CPU or GPU)
    module = PairEncoder(encoder, loss, [p.score for p in pairs]).to(device)
    enc = [(tokenizer.encode(p.a, maxlen=maxlen), tokenizer.encode(p.b, maxlen=maxlen), p.score) for p in pairs]
    per_epoch = math.ceil(len(enc) / batch_size)
    total = steps or epochs * per_epoch

    def epoch_batches(epoch: int) -> list[list[int]]:
        order = list(range(len(enc)))
        random.Random(seed + epoch).shuffle(order)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

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


def main(argv: list[str] | None = None) -> int:
    from .. import argtypes as at
    from ..tasks.common import Timer, command, model_and_tokenizer, setup, write_metrics
    from ..tasks.export import save_task_model
    from .pairs import read_pairs

    p = at.ArgumentParser(prog="kexue similarity", description="Train a sentence encoder on labelled pairs with "
                          "CoSENT, SBERT's softmax classifier or cosine regression (the CoSENT post's comparison)")
    p.add_argument("--train", type=at.input_file, metavar="FILE", required=True,
                   help="pairs: sentence1<TAB>sentence2<TAB>label lines, or JSON lines with sentence1/sentence2/label")
    p.add_argument("--dev", type=at.input_file, metavar="FILE", help="pairs to score by Spearman (same formats)")
    p.add_argument("--loss", choices=LOSSES, default="cosent", help="training objective")
    p.add_argument("--checkpoint", type=at.model_or_shipped, metavar="DIR",
                   help="starting point: an HF-layout folder, 'minilm' or 'zh-mini' (default: a small model from scratch)")
    p.add_argument("--family", default="roformer", choices=["bert", "roformer", "roformer_v2"],
                   help="family of the from-scratch model (without --checkpoint)")
    p.add_argument("--out", default="runs/similarity", metavar="DIR", help="output folder: the trained encoder")
    p.add_argument("--overwrite", action="store_true", help="replace a model already saved in --out")
    p.add_argument("--epochs", type=at.positive_int, default=1, help="passes over the training pairs")
    p.add_argument("--steps", type=at.positive_int, default=None, help="optimizer updates (overrides --epochs)")
    p.add_argument("--lr", type=at.positive_float, default=None,
                   help="peak learning rate (default: 2e-5 from a checkpoint, 1e-3 from scratch)")
    p.add_argument("--batch-size", type=at.positive_int, default=32, help="pairs per step")
    p.add_argument("--maxlen", type=at.positive_int, default=64, help="longest sentence in tokens")
    p.add_argument("--eval-every", type=at.positive_int, default=None, help="score --dev every N updates too")
    p.add_argument("--limit", type=at.positive_int, default=None, help="use only the first N train/dev pairs")
    p.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation and shuffling")
    p.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    train = read_pairs(args.train)[: args.limit]
    dev = read_pairs(args.dev)[: args.limit] if args.dev else None
    from ..pretrained import SHIPPED, shipped

    start = shipped(args.checkpoint) if args.checkpoint in SHIPPED else None
    if start is None:
        ns = type("A", (), {"checkpoint": args.checkpoint, "family": args.family})
        start = model_and_tokenizer(ns, [s for q in train for s in (q.a, q.b)])
    encoder, tokenizer = start
    lr = args.lr or (2e-5 if args.checkpoint else 1e-3)
    history = train_pair_encoder(encoder, tokenizer, train, args.loss, args.steps, args.epochs, args.batch_size, lr,
                                 args.maxlen, args.seed, dev, args.eval_every, not args.no_progress)
    data = {"train": args.train, "dev": args.dev or "none"}
    metrics = {"task": "encoder", "loss_function": args.loss, **data, "n_train": len(train),
               "n_dev": len(dev) if dev else 0, "checkpoint": args.checkpoint, "steps": len(history["loss"]),
               "dev_spearman_curve": history["eval"], "seconds": timer.seconds()}
    if dev:
        metrics["dev_spearman"] = history["eval"][-1]["spearman"]
    save_task_model(out, "encoder", encoder, tokenizer, {}, None, {"maxlen": args.maxlen}, metrics,
                    [float(x) for x in history["loss"]],
                    {"command": command(argv, "similarity"), "data": data,
                     "settings": {"loss": args.loss, "lr": lr, "batch_size": args.batch_size,
                                  "checkpoint": args.checkpoint or args.family + " from scratch"}})
    write_metrics(out, metrics)
    return 0
