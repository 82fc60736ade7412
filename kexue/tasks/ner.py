"""NER recipe: GlobalPointer / Efficient GlobalPointer (optionally with R-Drop) or a CRF tagger.

``kexue ner --head globalpointer|efficient|crf [--rdrop 1.0]`` trains on People's Daily
``example.dev`` and reports entity-level P/R/F1 on ``example.test``. GlobalPointer is trained with the
sparse multilabel categorical cross-entropy (《GlobalPointer：用统一的方式处理嵌套和非嵌套NER》); R-Drop
runs every batch twice through dropout and adds α·D(s, t) with the GlobalPointer KL
(《GlobalPointer下的KL散度》). The CRF baseline puts a linear emission layer + CRF on the same encoder.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import datasets
from ..heads import CRF, EfficientGlobalPointer, GlobalPointer, decode_spans
from ..losses import globalpointer_crossentropy, globalpointer_kl
from .common import Timer, batches, char_ids, fit, model_and_tokenizer, pad, recipe_args, setup, write_metrics
from .metrics import bio_to_spans, span_prf

HEADS = {"globalpointer": GlobalPointer, "efficient": EfficientGlobalPointer}


class Tagger(nn.Module):
    """Encoder + span head (GlobalPointer family) or emission layer + CRF."""

    def __init__(self, encoder: nn.Module, head: str, types: list[str], head_size: int = 64):
        super().__init__()
        self.encoder, self.head_name, self.types = encoder, head, types
        dim = encoder.config.hidden_size
        if head == "crf":
            self.tags = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
            self.emit = nn.Linear(dim, len(self.tags))
            self.crf = CRF(len(self.tags))
        else:
            self.head = HEADS[head](dim, len(types), head_size)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encoder(batch["input_ids"], attention_mask=batch["attention_mask"]).hidden
        if self.head_name == "crf":
            return self.emit(h)
        return self.head(h, batch["span_mask"])


def encode(tokenizer, sents: list[tuple[list[str], list[str]]], maxlen: int) -> list[dict]:
    """[CLS] chars [SEP] with gold spans shifted by one for [CLS]; long sentences are cut at maxlen."""
    out = []
    for chars, tags in sents:
        chars, tags = chars[: maxlen - 2], tags[: maxlen - 2]
        ids = [tokenizer.cls_id] + char_ids(tokenizer, chars) + [tokenizer.sep_id]
        out.append({"ids": ids, "tags": tags, "spans": bio_to_spans(tags)})
    return out


def collate(items: list[dict], tagger: Tagger, pad_id: int) -> dict[str, Tensor]:
    batch = pad([(it["ids"], [0] * len(it["ids"])) for it in items], pad_id)
    # spans may only start/end on real characters: exclude [CLS], [SEP] and padding
    span_mask = batch["attention_mask"].clone()
    span_mask[:, 0] = 0
    span_mask[torch.arange(len(items)), batch["attention_mask"].sum(1) - 1] = 0
    batch["span_mask"] = span_mask
    L = batch["input_ids"].shape[1]
    if tagger.head_name == "crf":
        tag_id = {t: i for i, t in enumerate(tagger.tags)}
        tags = torch.zeros_like(batch["input_ids"])
        for r, it in enumerate(items):
            tags[r, 1:1 + len(it["tags"])] = torch.tensor([tag_id.get(t, 0) for t in it["tags"]])
        batch["tags"] = tags
    else:
        type_id = {t: i for i, t in enumerate(tagger.types)}
        k = max(1, max(len(it["spans"]) for it in items))
        spans = torch.full((len(items), len(tagger.types), k), -1)
        for r, it in enumerate(items):
            fill = [0] * len(tagger.types)
            for kind, s, e in sorted(it["spans"]):
                t = type_id[kind]
                spans[r, t, fill[t]] = (s + 1) * L + (e + 1)
                fill[t] += 1
        batch["spans"] = spans
    return batch


def loss_fn(tagger: Tagger, batch: dict[str, Tensor], rdrop: float) -> Tensor:
    if tagger.head_name == "crf":
        # the CRF runs over [CLS] chars [SEP]; [CLS]/[SEP] carry tag O
        return tagger.crf(tagger(batch), batch["tags"], batch["attention_mask"])
    if rdrop <= 0:
        return globalpointer_crossentropy(tagger(batch), batch["spans"])
    s, t = tagger(batch), tagger(batch)  # two dropout masks
    ce = (globalpointer_crossentropy(s, batch["spans"]) + globalpointer_crossentropy(t, batch["spans"])) / 2
    return ce + rdrop * globalpointer_kl(s, t) / 2


@torch.no_grad()
def predict(tagger: Tagger, items: list[dict], pad_id: int, batch_size: int = 64) -> list[set]:
    tagger.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i]["ids"]))  # similar lengths, less padding
    preds = []
    for chunk in batches([items[i] for i in order], batch_size):
        batch = collate(chunk, tagger, pad_id)
        out = tagger(batch)
        if tagger.head_name == "crf":
            for path in tagger.crf.decode(out, batch["attention_mask"]):
                preds.append(bio_to_spans([tagger.tags[i] for i in path[1:-1]]))
        else:
            for spans in decode_spans(out, threshold=0.0):
                preds.append({(tagger.types[t], s - 1, e - 1) for t, s, e in spans})
    restored = [set()] * len(items)
    for i, p in zip(order, preds):
        restored[i] = p
    return restored


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("NER on People's Daily with GlobalPointer / Efficient GlobalPointer / CRF",
                    out="runs/ner", epochs=10, lr=2e-3)
    p.add_argument("--head", choices=["globalpointer", "efficient", "crf"], default="globalpointer")
    p.add_argument("--rdrop", type=float, default=0.0, help="R-Drop weight α on the GlobalPointer KL (0 = off)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--head-size", type=int, default=64)
    args = p.parse_args(argv)
    if args.rdrop and args.head == "crf":
        p.error("--rdrop applies to the GlobalPointer heads")
    out = setup(args)
    timer = Timer()
    train_s, test_s = datasets.ner_peoples_daily("dev"), datasets.ner_peoples_daily("test")
    if args.limit:
        train_s, test_s = train_s[: args.limit], test_s[: args.limit]
    types = sorted({k for _, tags in train_s for k, _, _ in bio_to_spans(tags)})
    encoder, tokenizer = model_and_tokenizer(args, ["".join(c) for c, _ in train_s], out)
    tagger = Tagger(encoder, args.head, types, args.head_size)
    train, test = encode(tokenizer, train_s, args.maxlen), encode(tokenizer, test_s, args.maxlen)
    history = fit(tagger, train, lambda b: loss_fn(tagger, collate(b, tagger, tokenizer.pad_id), args.rdrop),
                  args.epochs, args.lr, args.batch_size, args.seed, not args.no_progress, length=lambda it: len(it["ids"]))
    scores = span_prf(predict(tagger, test, tokenizer.pad_id), [it["spans"] for it in test])
    metrics = {"task": "ner", "head": args.head, "rdrop": args.rdrop, "train": "ner-peoples-daily/example.dev",
               "eval": "ner-peoples-daily/example.test", "n_train": len(train), "n_eval": len(test),
               "types": types, "checkpoint": args.checkpoint, "epochs": args.epochs, "loss": history,
               **scores, "seconds": timer.seconds()}
    write_metrics(out, metrics)
    return 0
