"""Short-text classification recipe: [CLS] vector -> linear softmax, accuracy.

``kexue classify`` tells Tang poems (tang300) from Song ci (song100) of fortunes-zh; ``--by poet``
predicts the author among poets with enough poems; ``--train train.tsv [--dev dev.tsv]`` takes any
user data as ``text \\t label`` lines, or ``text_a \\t text_b \\t label`` for sentence pairs
(``[CLS] a [SEP] b [SEP]``). Without ``--dev`` a stratified 20 % is held out; for sentence pairs 20 % grouped by
sentence instead (:func:`kexue.data.splits.grouped_split`: no sentence on both sides), and what the evaluation
pairs share with the training pairs is printed. The saved model predicts a label and the probability of every
label.
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from kexue.data.batching import length_batches, restore_order
from kexue.heads.pooling import pool
from kexue.losses.rdrop import rdrop_loss
from kexue.recipes import args as at
from kexue.data import shipped as datasets
from kexue.recipes.predictor import Predictor
from kexue.io import fingerprint
from kexue.recipes.common import (Metric, Timer, backbone, checked_card, command, parse, recipe_args, setup, start_run,
                                  tokenizer_for, vocabulary)
from kexue.data.files import read_labelled, require
from kexue.data.splits import grouped_split, split_report
from kexue.text.tokenizer import pad_batch
from kexue.recipes.folder import head_state, load_backbone, load_head, read_task, save_task_model


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        return self.out(self.drop(pool(h, batch["attention_mask"], "cls")))


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


@torch.no_grad()
def classify(model: Classifier, tokenizer, texts: list, labels: list[str], maxlen: int, progress: bool = False) -> list[dict]:
    """``{"text", "label", "probabilities": {label: p}}`` per text (or ``(a, b)`` pair), in the input order;
    computed in batches of up to 64 inputs of similar length (less padding)."""
    model.eval()
    encoded = [tokenizer.encode(t, maxlen=maxlen) if isinstance(t, str) else tokenizer.encode(t[0], t[1], maxlen=maxlen)
               for t in texts]
    buckets = length_batches([len(ids) for ids, _ in encoded], 64, shuffle=False)
    rows = []
    for idx in tqdm(buckets, desc="classifying", unit="batch", disable=not progress):
        rows += model(pad_batch([encoded[i] for i in idx], tokenizer.pad_id)).float().softmax(-1).tolist()
    out = []
    for text, row in zip(texts, restore_order(rows, buckets)):
        best = max(range(len(labels)), key=row.__getitem__)
        out.append({"text": text if isinstance(text, str) else list(text), "label": labels[best],
                    "probabilities": dict(zip(labels, row))})
    return out


class ClassifyPredictor(Predictor):
    """``predict(["text", …])`` (or ``[["a", "b"], …]`` for a sentence-pair model) ->
    ``[{"text", "label", "probabilities": {label: p}}]``."""

    task, model_attr = "classify", "classifier"
    settings_schema, poolings, needs_labels = {"maxlen": "integer", "pair": "boolean"}, ("cls",), True

    @classmethod
    def head_rows(cls, settings: dict, labels: list[str]) -> dict[str, int]:
        return {"out.weight": len(labels), "out.bias": len(labels)}

    def __init__(self, model: Classifier, tokenizer, labels: list[str], maxlen: int, pair: bool):
        self.classifier, self.tokenizer, self.labels, self.maxlen, self.pair = model.eval(), tokenizer, labels, maxlen, pair

    @classmethod
    def from_folder(cls, directory) -> "ClassifyPredictor":
        info = read_task(directory)
        encoder, tokenizer = load_backbone(directory)
        model = load_head(directory, Classifier(encoder, len(info["labels"])), "encoder")
        return cls(model, tokenizer, info["labels"], info["settings"]["maxlen"], info["settings"]["pair"])

    def check(self, item):
        if self.pair:
            if isinstance(item, dict) and {"text_a", "text_b"} <= set(item):
                item = [item["text_a"], item["text_b"]]
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(t, str) for t in item)):
                raise ValueError('this is a sentence-pair model: an input is ["text_a", "text_b"]')
            return tuple(item)
        if not isinstance(item, str):
            raise ValueError(f"a classification input is a text string, got {type(item).__name__}")
        return item

    def _predict(self, texts: list, **_) -> list[dict]:
        return classify(self.classifier, self.tokenizer, texts, self.labels, self.maxlen, self.progress)


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Short-text classification (Tang vs Song, poet, or a user TSV)", out="runs/classify",
                    epochs=8, lr=1e-3, batch_size=16, data="TSV, text<TAB>label or text_a<TAB>text_b<TAB>label",
                    supports=("rdrop", "vat"))
    p.add_argument("--by", choices=["dynasty", "poet"], default="dynasty",
                   help="label of the fortunes-zh poems (without --train)")
    p.add_argument("--maxlen", type=at.positive_int, default=160, help="longest input in tokens")
    args = parse(p, argv)
    out = setup(args)
    timer = Timer()
    rows = read_labelled(args.train) if args.train else poem_data(args.by)
    pair = not isinstance(rows[0][0], str)
    if pair and not args.dev:  # sentence pairs: no sentence on both sides (kexue.data.splits), else dev flatters
        cut = grouped_split(rows, 0.2, args.seed, sides=lambda r: r[0])
        train, test = list(cut.train), list(cut.dev)
        print(cut.report.line(f"kexue classify: {args.train}"))
    else:
        train, test = (rows, read_labelled(args.dev)) if args.dev else stratified_split(rows, 0.2, args.seed)
    if any((not isinstance(t, str)) != pair for t, _ in test):
        raise ValueError(f"--dev {args.dev}: {'single texts' if pair else 'sentence pairs'} unlike --train")
    if pair and args.dev:
        print(split_report(train, test, sides=lambda r: r[0]).line(f"kexue classify: {args.train} / {args.dev}"))
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    labels = sorted({lab for _, lab in train})
    if len(labels) == 1:
        raise ValueError(f"{args.train or 'the training data'}: only one label ({labels[0]!r}); need at least 2")
    require(labels, 2, args.train or "the training data", "label", "among the training examples" + ("" if args.dev
            else "; the stratified 20 % hold-out takes one example of every label first: give every label 2 or more "
            "examples, or give --dev"))
    index = {lab: i for i, lab in enumerate(labels)}
    flat = lambda t: t if isinstance(t, str) else t[0] + t[1]  # noqa: E731
    tokenizer = tokenizer_for(args, [flat(t) for t, _ in train])
    run = start_run(args, out, "classify", n_train=len(train),
                    architecture={"vocabulary": vocabulary(tokenizer), "labels": labels},
                    settings={"data": fingerprint(train), "eval_data": fingerprint(test), "maxlen": args.maxlen})
    if run is None:
        return 0
    model = Classifier(backbone(args, tokenizer), len(labels))

    def logits(m, chunk):
        return model(tokenizer.encode_batch([t for t, _ in chunk], maxlen=args.maxlen))

    def step(chunk):
        batch = tokenizer.encode_batch([t for t, _ in chunk], maxlen=args.maxlen)
        labels = torch.tensor([index[lab] for _, lab in chunk])
        if args.rdrop:  # two dropout passes (R-Drop)
            return rdrop_loss(model(batch), model(batch), labels, args.rdrop)
        return F.cross_entropy(model(batch), labels)

    def accuracy(preds) -> float:
        return sum(p["label"] == lab for p, (_, lab) in zip(preds, test)) / max(1, len(test))

    texts = [t for t, _ in test]
    metric = Metric("accuracy", lambda: {"accuracy": accuracy(classify(model, tokenizer, texts, labels, args.maxlen))})
    trained = run.train(model, train, step, metric, length=lambda r: len(flat(r[0])), logits=logits)
    preds = classify(model, tokenizer, texts, labels, args.maxlen, not args.no_progress)
    majority = Counter(lab for _, lab in train).most_common(1)[0][0]
    data = {"train": args.train or f"fortunes-zh poems by {args.by}", "eval": args.dev or "stratified 20 % of train"}
    metrics = {"task": "classify", **data, "labels": labels, "pair": pair,
               "n_train": len(train), "n_eval": len(test), "checkpoint": args.checkpoint, "epochs": args.epochs,
               "lr": args.lr, "loss": trained.epoch_losses, "accuracy": accuracy(preds),
               "majority_baseline": sum(lab == majority for _, lab in test) / max(1, len(test)),
               "eval_labels_unseen_in_training": sorted({lab for _, lab in test} - set(labels)),
               **trained.metrics(), "seconds": timer.seconds()}
    card = checked_card(run, trained, {
        "command": command(argv, "classify"), "data": data, "out": str(out),
        "settings": {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "classify", model.encoder, tokenizer, head_state(model, "encoder"), labels,
                    {"maxlen": args.maxlen, "pair": pair}, metrics, trained.losses, card, predictions=preds,
                    overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss", "dev_curve")}, ensure_ascii=False))
    return 0
