"""Class-conditional poem generation with Conditional Layer Normalization.

《基于Conditional Layer Normalization的条件文本生成》: a class embedding c enters every LayerNorm,
γ(c) = γ + W_γ c, β(c) = β + W_β c (W zero-initialised), so one causal LM writes in the style of the
chosen class. ``kexue poem`` trains on fortunes-zh Tang poems vs Song ci (``--by poet``: the author),
or on ``--train poems.txt`` (one poem per line, ``class<TAB>poem`` to condition on a class),
then samples poems per class; the saved model writes poems for ``kexue predict DIR 唐``. Held-out score: per-token perplexity under the true class, and the
*conditional accuracy* — how often a held-out poem is most likely under its own class, which is
above chance only if the condition is actually used.
"""
from __future__ import annotations

import dataclasses
import json
import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from kexue.losses.language_model import next_token_loss
from kexue.recipes import args as at
from kexue.generation import GenerationOptions, decode_state, decoding_state
from kexue.recipes.predictor import Predictor
from kexue.recipes.classify import poem_data, stratified_split
from kexue.io import fingerprint
from kexue.recipes.common import (Metric, Timer, backbone, batches, checked_card, command, parse, recipe_args, setup,
                                  start_run, tokenizer_for, vocabulary)
from kexue.data.files import read_poems, require
from kexue.recipes.folder import head_state, load_backbone, load_head, read_task, save_task_model
from kexue.recipes.sampling import special_ids, task_options


class ConditionalLM(nn.Module):
    def __init__(self, lm: nn.Module, n_classes: int, cond_dim: int):
        super().__init__()
        self.lm = lm
        self.classes = nn.Embedding(n_classes, cond_dim)

    def forward(self, input_ids, segment_ids=None, attention_mask=None, cond=None, label: Tensor | None = None):
        if label is not None:
            cond = self.classes(label)
        return self.lm(input_ids, segment_ids, attention_mask, cond=cond)


def token_nll(model: ConditionalLM, batch: dict[str, Tensor], label: Tensor) -> Tensor:
    """Summed next-token NLL per sequence ``[B]`` (padding excluded)."""
    logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], label=label).logits
    return next_token_loss(logits, batch["input_ids"], batch["attention_mask"], reduction="none").sum(1)


MIN_POEM = 8  # min_new_tokens of a poem


def poem_options(given: dict, defaults: dict | None = None) -> GenerationOptions:
    """A poem's :class:`GenerationOptions`: ``given`` over ``defaults`` (the folder's saved settings) over
    126 new tokens at most, ``MIN_POEM`` at least; sampled (seed 0 unless given) unless ``num_beams > 1``."""
    return task_options(given, {"max_new_tokens": 126, **(defaults or {})}, min_new_tokens=MIN_POEM)


@torch.no_grad()
def write_poems(model: ConditionalLM, tokenizer, labels: list[str], label: str, prefix: str = "",
                options: GenerationOptions | None = None) -> dict:
    """``{"class", "poems": [...]}``: ``num_samples`` poems of class ``label``, continuing ``prefix``;
    ``options`` default to :func:`poem_options` ``({})``."""
    options = options or poem_options({})
    n = options.num_samples
    cond = model.classes(torch.full((1,), labels.index(label)))
    start = torch.tensor([tokenizer.encode(prefix)[0][:-1]])  # [CLS] prefix, no [SEP]: the poem goes on
    if n > 1 and options.num_beams == 1:
        cond, start = cond.expand(n, -1), start.expand(n, -1)  # n rows, one generator: rows differ
        options = dataclasses.replace(options, num_samples=1)
    state = decoding_state(model.lm, start, cond=cond, banned_ids=special_ids(tokenizer))
    rows = decode_state(state, options, tokenizer.sep_id)
    return {"class": label, "poems": [prefix + tokenizer.decode(r) for r in rows]}


class PoemPredictor(Predictor):
    """``predict(["唐", {"class": "宋", "prefix": "明月"}])`` -> ``[{"class", "poems": [...]}]``; options: the
    generation options."""

    task, model_attr = "poem", "lm"
    options = GenerationOptions.user_options()
    settings_schema, needs_labels = {"cond_dim": "integer", "maxlen": "integer", "generation": "object"}, True

    @classmethod
    def head_rows(cls, settings: dict, labels: list[str]) -> dict[str, int]:
        return {"classes.weight": len(labels)}

    def __init__(self, model: ConditionalLM, tokenizer, labels: list[str], defaults: dict):
        self.lm, self.tokenizer, self.labels, self.defaults = model.eval(), tokenizer, labels, defaults

    @classmethod
    def from_folder(cls, directory) -> "PoemPredictor":
        info = read_task(directory)
        s = info["settings"]
        lm, tokenizer = load_backbone(directory)
        model = load_head(directory, ConditionalLM(lm, len(info["labels"]), s["cond_dim"]), "lm")
        return cls(model, tokenizer, info["labels"], s["generation"])

    def check(self, item):
        if isinstance(item, str):
            item = {"class": item}
        if not isinstance(item, dict) or not isinstance(item.get("class"), str):
            raise ValueError('a poem input is a class name or {"class": ..., "prefix": ...}')
        if item["class"] not in self.labels:
            raise ValueError(f"unknown class {item['class']!r}; this model knows {', '.join(self.labels)}")
        if not isinstance(item.get("prefix", ""), str) or set(item) - {"class", "prefix"}:
            raise ValueError('a poem input has only "class" and an optional string "prefix"')
        return item

    def _predict(self, items: list[dict], **options) -> list[dict]:
        options = poem_options(options, self.defaults)
        return [write_poems(self.lm, self.tokenizer, self.labels, x["class"], x.get("prefix", ""), options)
                for x in tqdm(items, desc="writing", unit="input", disable=not self.progress)]


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Class-conditional poem generation with Conditional LayerNorm (fortunes-zh by default)",
                    out="runs/poem", epochs=10, lr=2e-3, batch_size=16,
                    data="plain text, one poem per line, optionally class<TAB>poem")
    p.add_argument("--by", choices=["dynasty", "poet"], default="dynasty", help="the class of a shipped poem")
    p.add_argument("--maxlen", type=at.positive_int, default=128, help="longest poem in tokens")
    p.add_argument("--cond-dim", type=at.positive_int, default=64, help="size of the class embedding")
    p.add_argument("--samples", type=at.positive_int, default=2, help="poems generated per class after training")
    p.add_argument("--top-k", type=at.positive_int, default=8, help="sampling from the k most likely characters")
    args = parse(p, argv)
    if args.maxlen < 12:
        p.error("--maxlen must be at least 12 (a poem of 8 characters + 2 special tokens and room to grow)")
    out = setup(args)
    timer = Timer()
    if args.train:
        rows = read_poems(args.train)
        train, test = (rows, read_poems(args.dev)) if args.dev else stratified_split(rows, 0.1, args.seed)
    else:
        train, test = stratified_split(poem_data(args.by), 0.1, args.seed)
        if args.dev:
            test = read_poems(args.dev)
    if args.limit:
        train, test = train[: args.limit], test[: max(2, args.limit // 5)]
    require(train, 1, args.train or "the shipped poems", "training poem", "" if args.dev else "the stratified "
            "10 % hold-out takes one poem of every class first: give every class 2 or more poems, or give --dev")
    labels = sorted({lab for _, lab in train})
    index = {lab: i for i, lab in enumerate(labels)}
    unseen = sorted({lab for _, lab in test} - set(index))
    test = [(t, lab) for t, lab in test if lab in index]
    tokenizer = tokenizer_for(args, [t for t, _ in train])
    run = start_run(args, out, "poem", n_train=len(train),
                    architecture={"vocabulary": vocabulary(tokenizer), "labels": labels, "cond_dim": args.cond_dim},
                    settings={"data": fingerprint(train), "eval_data": fingerprint(test), "maxlen": args.maxlen})
    if run is None:
        return 0
    lm = backbone(args, tokenizer, application="lm", with_mlm=True, cond_dim=args.cond_dim)
    model = ConditionalLM(lm, len(labels), args.cond_dim)

    def tensors(chunk):
        return tokenizer.encode_batch([t for t, _ in chunk], maxlen=args.maxlen), \
            torch.tensor([index.get(lab, 0) for _, lab in chunk])

    def step(chunk):
        batch, label = tensors(chunk)
        return token_nll(model, batch, label).sum() / (batch["attention_mask"][:, 1:].sum())

    def perplexity() -> dict[str, float]:
        """Per-token perplexity of the held-out poems under their own class."""
        nll = n = 0
        for chunk in batches(test, 32):
            batch, label = tensors(chunk)
            nll += float(token_nll(model, batch, label).sum())
            n += int(batch["attention_mask"][:, 1:].sum())
        return {"perplexity": math.exp(min(nll / max(1, n), 700))}

    trained = run.train(model, train, step, Metric("perplexity", perplexity, higher=False), length=lambda r: len(r[0]))
    nll_true = n_tokens = 0
    hits, seen = [0] * len(labels), [0] * len(labels)
    with torch.no_grad():
        for chunk in tqdm(list(batches(test, 32)), desc="scoring", unit="batch", disable=args.no_progress):
            batch, label = tensors(chunk)
            per_class = torch.stack([token_nll(model, batch, torch.full_like(label, c)) for c in range(len(labels))], 1)
            nll_true += float(per_class.gather(1, label[:, None]).sum())
            n_tokens += int(batch["attention_mask"][:, 1:].sum())
            for c, ok in zip(label.tolist(), (per_class.argmin(1) == label).tolist()):
                hits[c], seen[c] = hits[c] + ok, seen[c] + 1
    generation = {"num_samples": args.samples, "top_k": args.top_k, "max_new_tokens": args.maxlen - 2, "seed": args.seed}
    samples = [write_poems(model, tokenizer, labels, lab, options=poem_options({}, generation)) for lab in labels[:8]]
    data = {"train": args.train or f"fortunes-zh tang300+song100 by {args.by}", "eval": args.dev or "stratified 10 % of train"}
    metrics = {"task": "poem", **data, "labels": labels,
               "n_train": len(train), "n_eval": len(test), "eval_classes_unseen_in_training": unseen,
               "checkpoint": args.checkpoint, "epochs": args.epochs, "lr": args.lr,
               "loss": trained.epoch_losses, "eval_perplexity": math.exp(nll_true / max(1, n_tokens)),
               "conditional_accuracy": sum(hits) / max(1, len(test)),
               # mean over classes of per-class accuracy: immune to the Tang-heavy class balance
               "conditional_balanced_accuracy": sum(h / n for h, n in zip(hits, seen) if n) / max(1, sum(map(bool, seen))),
               "chance": 1 / len(labels),
               "samples": {s["class"]: s["poems"] for s in samples}, "decoder": f"kexue.generation top-{args.top_k} sampling",
               **trained.metrics(), "seconds": timer.seconds()}
    card = checked_card(run, trained, {
        "command": command(argv, "poem"), "data": data, "out": str(out),
        "settings": {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "poem", lm, tokenizer, head_state(model, "lm"), labels,
                    {"cond_dim": args.cond_dim, "maxlen": args.maxlen, "generation": generation}, metrics,
                    trained.losses, card, predictions=samples, overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss", "dev_curve")}, ensure_ascii=False))
    return 0
