"""Short-text classification recipe: [CLS] vector -> linear softmax, accuracy.

``kexue classify`` tells Tang poems (tang300) from Song ci (song100) of fortunes-zh; ``--by poet``
predicts the author among poets with enough poems; ``--tsv train.tsv [--eval-tsv dev.tsv]`` takes any
user data as ``text \\t label`` lines. Without ``--eval-tsv`` a stratified 20 % is held out.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import datasets
from .common import Timer, batches, fit, model_and_tokenizer, recipe_args, setup, write_metrics


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        return self.out(self.drop(h[:, 0]))


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text, sep, label = line.rpartition("\t")
        if sep and text.strip():
            rows.append((text, label.strip()))
    return rows


def poem_data(by: str, min_poems: int = 8) -> list[tuple[str, str]]:
    tang, song = datasets.poems("tang300"), datasets.poems("song100")
    if by == "dynasty":
        return [(p.text, "唐") for p in tang] + [(p.text, "宋") for p in song]
    counts = Counter(p.author for p in tang + song)
    return [(p.text, p.author) for p in tang + song if counts[p.author] >= min_poems]


def stratified_split(rows: list[tuple[str, str]], frac: float, seed: int):
    by_label = defaultdict(list)
    for r in rows:
        by_label[r[1]].append(r)
    train, test = [], []
    rng = random.Random(seed)
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        k = max(1, round(len(group) * frac))
        test += group[:k]
        train += group[k:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Short-text classification (Tang vs Song, poet, or a user TSV)", out="runs/classify",
                    epochs=8, lr=1e-3, batch_size=16)
    p.add_argument("--by", choices=["dynasty", "poet"], default="dynasty", help="label of the fortunes-zh poems")
    p.add_argument("--tsv", help="training data: text<TAB>label per line")
    p.add_argument("--eval-tsv", help="evaluation data (default: stratified 20%% of the training data)")
    p.add_argument("--maxlen", type=int, default=160)
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    rows = read_tsv(args.tsv) if args.tsv else poem_data(args.by)
    train, test = (rows, read_tsv(args.eval_tsv)) if args.eval_tsv else stratified_split(rows, 0.2, args.seed)
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    labels = sorted({lab for _, lab in train})
    index = {lab: i for i, lab in enumerate(labels)}
    encoder, tokenizer = model_and_tokenizer(args, [t for t, _ in train], out)
    model = Classifier(encoder, len(labels))

    def tensors(chunk):
        batch = tokenizer.encode_batch([t for t, _ in chunk], maxlen=args.maxlen)
        batch["labels"] = torch.tensor([index.get(lab, -100) for _, lab in chunk])
        return batch

    def step(chunk):
        batch = tensors(chunk)
        return F.cross_entropy(model(batch), batch["labels"])

    history = fit(model, train, step, args.epochs, args.lr, args.batch_size, args.seed, not args.no_progress,
                  length=lambda r: len(r[0]))
    correct = 0
    with torch.no_grad():
        for chunk in batches(test, 64):
            batch = tensors(chunk)
            correct += int((model(batch).argmax(-1) == batch["labels"]).sum())
    majority = Counter(lab for _, lab in train).most_common(1)[0][0]
    metrics = {"task": "classify", "data": args.tsv or f"fortunes-zh poems by {args.by}", "labels": labels,
               "n_train": len(train), "n_eval": len(test), "checkpoint": args.checkpoint, "epochs": args.epochs,
               "loss": history, "accuracy": correct / max(1, len(test)),
               "majority_baseline": sum(lab == majority for _, lab in test) / max(1, len(test)),
               "seconds": timer.seconds()}
    write_metrics(out, metrics)
    return 0
