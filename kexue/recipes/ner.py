"""NER recipe: GlobalPointer / Efficient GlobalPointer (optionally with R-Drop) or a CRF tagger.

``kexue ner --head globalpointer|efficient|crf [--rdrop 1.0]`` trains on People's Daily
``example.dev`` (or ``--train FILE``: ``char TAG`` lines, BIO/BIOES/BMES) and reports entity-level
P/R/F1 on ``example.test`` (or ``--dev FILE``), then saves the tagger for ``kexue predict``
(entity spans with character offsets). GlobalPointer decodes nested spans; ``--decode flat`` (for flat data)
takes the spans over the threshold greedily by score, each kept only if it overlaps none kept before
(:func:`kexue.heads.decode_spans`). GlobalPointer is trained with the
sparse multilabel categorical cross-entropy (《GlobalPointer：用统一的方式处理嵌套和非嵌套NER》); R-Drop
runs every batch twice through dropout and adds α·D(s, t) with the GlobalPointer KL
(《GlobalPointer下的KL散度》). The CRF baseline puts a linear emission layer + CRF on the same encoder.
"""
from __future__ import annotations

import json

import torch
from torch import Tensor, nn
from tqdm import tqdm

from kexue.data.batching import length_batches, restore_order
from kexue.recipes import args as at
from kexue.data import shipped as datasets
from kexue.heads import CRF, EfficientGlobalPointer, GlobalPointer, decode_spans
from kexue.losses import globalpointer_crossentropy
from kexue.losses import globalpointer_kl, rdrop_combine
from kexue.recipes.predictor import Predictor
from kexue.io import fingerprint
from kexue.recipes.common import (Metric, Timer, backbone, char_ids, checked_card, command, pad, parse, recipe_args,
                                  setup, start_run, tokenizer_for, vocabulary)
from kexue.data.files import read_tagged
from kexue.recipes.folder import head_state, load_backbone, load_head, read_task, save_task_model
from kexue.recipes.metrics import bio_to_spans, span_prf, spans_to_bio

HEADS = {"globalpointer": GlobalPointer, "efficient": EfficientGlobalPointer}


class Tagger(nn.Module):
    """Encoder + span head (GlobalPointer family) or emission layer + CRF."""

    def __init__(self, encoder: nn.Module, head: str, types: list[str], head_size: int = 64, decode: str = "nested"):
        super().__init__()
        self.encoder, self.head_name, self.types, self.decode = encoder, head, types, decode
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
        spans = bio_to_spans(tags)  # BIO/BIOES/BMES alike; the CRF learns the BIO rewrite
        out.append({"ids": ids, "tags": spans_to_bio(spans, len(tags)), "spans": spans})
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
                if kind not in type_id:  # a type unseen in training: nothing to learn, skipped
                    continue
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
    s, t = tagger(batch), tagger(batch)  # two dropout masks: R-Drop with GlobalPointer's symmetric divergence
    return rdrop_combine(globalpointer_crossentropy(s, batch["spans"]), globalpointer_crossentropy(t, batch["spans"]),
                         globalpointer_kl(s, t), rdrop)


@torch.no_grad()
def predict(tagger: Tagger, items: list[dict], pad_id: int, batch_size: int = 64, progress: bool = False) -> list[set]:
    tagger.eval()
    buckets = length_batches([len(it["ids"]) for it in items], batch_size, shuffle=False)  # less padding
    preds = []
    for idx in tqdm(buckets, desc="tagging", unit="batch", disable=not progress):
        batch = collate([items[i] for i in idx], tagger, pad_id)
        out = tagger(batch)
        if tagger.head_name == "crf":
            for path in tagger.crf.decode(out, batch["attention_mask"]):
                preds.append(bio_to_spans([tagger.tags[i] for i in path[1:-1]]))
        else:
            for spans in decode_spans(out, threshold=0.0, flat=tagger.decode == "flat"):
                preds.append({(tagger.types[t], s - 1, e - 1) for t, s, e in spans})
    return restore_order(preds, buckets)


def entities(text: str, spans: set, truncated: bool = False) -> dict:
    """Prediction record: entity spans with character offsets (``end`` exclusive: ``text[start:end]``)."""
    ents = [{"type": k, "start": s, "end": e + 1, "text": text[s:e + 1]} for k, s, e in sorted(spans, key=lambda x: (x[1], x[2], x[0]))]
    return {"text": text, "entities": ents, "truncated": truncated}


class NERPredictor(Predictor):
    """``predict(["text", …])`` -> ``[{"text", "entities": [{type, start, end, text}], "truncated"}]``;
    text past ``maxlen - 2`` characters is not tagged (``truncated: true``), as in training."""

    task, model_attr = "ner", "tagger"
    settings_schema = {"head": "string", "head_size": "integer", "maxlen": "integer", "decode": "string"}
    needs_labels, settings_defaults = True, {"decode": "nested"}  # folders before --decode: nested
    settings_choices = {"head": ("globalpointer", "efficient", "crf"), "decode": ("nested", "flat")}

    @classmethod
    def head_rows(cls, settings: dict, labels: list[str]) -> dict[str, int]:
        n = len(labels)
        if settings["head"] == "crf":
            return {"emit.weight": 2 * n + 1}
        if settings["head"] == "efficient":
            return {"head.type_bias.weight": 2 * n}
        return {"head.dense.weight": 2 * n * settings["head_size"]}

    def __init__(self, tagger: Tagger, tokenizer, maxlen: int):
        self.tagger, self.tokenizer, self.maxlen = tagger.eval(), tokenizer, maxlen

    @classmethod
    def from_folder(cls, directory) -> "NERPredictor":
        info = read_task(directory)
        s = info["settings"]
        encoder, tokenizer = load_backbone(directory)
        tagger = Tagger(encoder, s["head"], info["labels"], s["head_size"], s.get("decode", "nested"))
        tagger = load_head(directory, tagger, "encoder")
        return cls(tagger, tokenizer, s["maxlen"])

    def check(self, item):
        if not isinstance(item, str):
            raise ValueError(f"an NER input is a text string, got {type(item).__name__}")
        return item

    def _predict(self, texts: list[str], **_) -> list[dict]:
        items = encode(self.tokenizer, [(list(t), ["O"] * len(t)) for t in texts], self.maxlen)
        spans = predict(self.tagger, items, self.tokenizer.pad_id, progress=self.progress)
        return [entities(t, p, len(t) > self.maxlen - 2) for t, p in zip(texts, spans)]


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("NER with GlobalPointer / Efficient GlobalPointer / CRF (People's Daily by default)",
                    out="runs/ner", epochs=10, lr=2e-3, data="one 'char TAG' per line, blank line between "
                    "sentences, BIO/BIOES tags", supports=("rdrop",),
                    why_not={"vat": "VAT needs one class distribution per example; GlobalPointer's span scores are "
                                    "independent sigmoids"})
    p.add_argument("--head", choices=["globalpointer", "efficient", "crf"], default="globalpointer",
                   help="span head (GlobalPointer family) or a CRF tagger")
    p.add_argument("--maxlen", type=at.positive_int, default=128, help="longest input in tokens (characters + 2)")
    p.add_argument("--head-size", type=at.positive_int, default=64, help="GlobalPointer query/key size")
    p.add_argument("--decode", choices=["nested", "flat"], default=None,
                   help="GlobalPointer spans: nested (every span over the threshold) or flat (greedy by score, "
                        "no overlap; for flat data) (default: nested)")
    args = parse(p, argv)
    if args.rdrop and args.head == "crf":
        p.error("--rdrop applies to the GlobalPointer heads")
    if args.decode and args.head == "crf":
        p.error("--decode applies to the GlobalPointer heads (a CRF's tags are flat already)")
    if args.maxlen < 3:
        p.error("--maxlen must be at least 3 ([CLS] character [SEP])")
    out = setup(args)
    timer = Timer()
    train_s = read_tagged(args.train) if args.train else datasets.ner_peoples_daily("dev")
    test_s = read_tagged(args.dev) if args.dev else datasets.ner_peoples_daily("test")
    if args.limit:
        train_s, test_s = train_s[: args.limit], test_s[: args.limit]
    types = sorted({k for _, tags in train_s for k, _, _ in bio_to_spans(tags)})
    if not types:
        raise ValueError(f"{args.train or 'the training data'}: no entity in the training sentences")
    tokenizer = tokenizer_for(args, ["".join(c) for c, _ in train_s])
    run = start_run(args, out, "ner", n_train=len(train_s),
                    architecture={"vocabulary": vocabulary(tokenizer), "types": types, "head": args.head,
                                  "head_size": args.head_size},
                    settings={"data": fingerprint(train_s), "eval_data": fingerprint(test_s), "maxlen": args.maxlen,
                              "rdrop": args.rdrop})
    if run is None:
        return 0
    encoder = backbone(args, tokenizer)
    tagger = Tagger(encoder, args.head, types, args.head_size, args.decode or "nested")
    train, test = encode(tokenizer, train_s, args.maxlen), encode(tokenizer, test_s, args.maxlen)
    gold = [it["spans"] for it in test]
    metric = Metric("f1", lambda: span_prf(predict(tagger, test, tokenizer.pad_id), gold))
    trained = run.train(tagger, train, lambda b: loss_fn(tagger, collate(b, tagger, tokenizer.pad_id), args.rdrop),
                        metric, length=lambda it: len(it["ids"]))
    progress = not args.no_progress
    preds = predict(tagger, test, tokenizer.pad_id, progress=progress)
    scores = span_prf(preds, gold)
    unseen = sorted({k for it in test for k, _, _ in it["spans"]} - set(types))
    data = {"train": args.train or "ner-peoples-daily/example.dev", "eval": args.dev or "ner-peoples-daily/example.test"}
    metrics = {"task": "ner", "head": args.head, "rdrop": args.rdrop, **data, "n_train": len(train), "n_eval": len(test),
               "types": types, "eval_types_unseen_in_training": unseen, "checkpoint": args.checkpoint,
               "epochs": args.epochs, "lr": args.lr, "loss": trained.epoch_losses, **scores, **trained.metrics(),
               "seconds": timer.seconds()}
    settings = {"head": args.head, "head_size": args.head_size, "maxlen": args.maxlen,
                **({"decode": args.decode or "nested"} if args.head != "crf" else {})}
    card = checked_card(run, trained, {
        "command": command(argv, "ner"), "data": data, "out": str(out),
        "settings": {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "rdrop": args.rdrop, "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "ner", encoder, tokenizer, head_state(tagger, "encoder"), types, settings, metrics,
                    trained.losses, card, overwrite=True,
                    predictions=[entities("".join(c), p, len(c) > args.maxlen - 2) for (c, _), p in zip(test_s, preds)])
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss", "dev_curve")}, ensure_ascii=False))
    return 0
