"""Multi-turn dialogue with a causal LM (DialoGPT style, as in bert4keras's ``task_conversation``).

A dialogue u_1, …, u_n becomes ``[CLS] u_1 [SEP] u_2 [SEP] … u_n [SEP]`` with segment ids alternating
0/1 by speaker, and the LM learns p(u_k | u_<k) by next-token prediction on the responses (turns
k ≥ 2). Replying = sampling a continuation of ``[CLS] context… [SEP]`` until ``[SEP]``.

Data: ``--tsv`` (one dialogue per line, turns separated by TAB), or by default what fortunes-zh
offers — its 36 speaker-tagged exchanges (``甲：… / 乙：…``) plus the Tang/Song poems read line by
line as 联句 (each line answering the previous one). Score: held-out response perplexity.
"""
from __future__ import annotations

import math
import random
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import datasets
from .common import Timer, batches, fit, model_and_tokenizer, pad, recipe_args, setup, write_metrics
from .sampling import DecodeView, SpeakerDecoding, sample

_SPEAKER = re.compile(r"^[^：:]{1,6}[：:]\S")


def fortunes_dialogues() -> list[list[str]]:
    """Speaker-tagged exchanges of fortunes-zh ``chinese`` (every line but at most one is ``X：…``)."""
    out = []
    for rec in datasets.fortunes("chinese"):
        lines = [ln.strip() for ln in rec.splitlines() if ln.strip()]
        turns = [ln for ln in lines if _SPEAKER.match(ln)]
        if len(turns) >= 2 and len(turns) >= len(lines) - 1:
            out.append(turns)
    return out


def poem_dialogues() -> list[list[str]]:
    """Poems as 联句: each line of a poem a turn."""
    out = []
    for p in datasets.poems("tang300") + datasets.poems("song100"):
        lines = [ln for ln in p.text.splitlines() if ln.strip()]
        if len(lines) >= 2:
            out.append(lines)
    return out


def read_tsv(path: str | Path) -> list[list[str]]:
    return [[t for t in line.split("\t") if t.strip()] for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.count("\t") >= 1]


def encode(tokenizer, turns: list[str], maxlen: int) -> tuple[list[int], list[int]]:
    """[CLS] u1 [SEP] u2 [SEP] …, segments alternating by speaker; oldest turns dropped past maxlen."""
    pieces = [tokenizer.encode(t)[0][1:] for t in turns]  # each: turn + [SEP]
    while len(pieces) > 1 and 1 + sum(map(len, pieces)) > maxlen:
        pieces = pieces[1:]
    ids, segs = [tokenizer.cls_id], [0]
    for k, piece in enumerate(pieces):
        piece = piece[: maxlen - len(ids)]
        ids += piece
        segs += [k % 2] * len(piece)
    return ids, segs


def response_loss(model, tokenizer, encoded, reduction: str = "mean"):
    """Next-token NLL on every turn after the first (the responses)."""
    batch = pad(encoded, tokenizer.pad_id)
    logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).logits
    first_sep = (batch["input_ids"] == tokenizer.sep_id).long().cumsum(1) >= 1  # past the first turn
    keep = first_sep[:, :-1] & (batch["attention_mask"][:, 1:] == 1)
    target = batch["input_ids"][:, 1:].masked_fill(~keep, -100)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="sum")
    return (nll / keep.sum().clamp(min=1), int(keep.sum())) if reduction == "mean" else (nll, int(keep.sum()))


def reply(model, tokenizer, context: list[str], maxlen: int = 128, top_k: int = 8, generator=None) -> str:
    """Sample the next turn after ``context`` (spoken by speaker ``len(context) % 2``)."""
    ids, segs = encode(tokenizer, context, maxlen - 32)
    view = DecodeView(model, banned=[tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id])
    state = SpeakerDecoding(view, torch.tensor([ids]), torch.tensor([segs]), len(context) % 2)
    return tokenizer.decode(sample(state, 32, tokenizer.sep_id, min_new_tokens=2, top_k=top_k, generator=generator)[0])


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Multi-turn dialogue with a causal LM", out="runs/dialogue", epochs=10, lr=2e-3, batch_size=16)
    p.add_argument("--tsv", help="dialogues, one per line, turns separated by TAB")
    p.add_argument("--data", choices=["dialogues", "poems", "both"], default="both",
                   help="fortunes-zh stand-in corpus when no --tsv is given")
    p.add_argument("--maxlen", type=int, default=128)
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    if args.tsv:
        dialogues = read_tsv(args.tsv)
    else:
        dialogues = (fortunes_dialogues() if args.data != "poems" else []) + \
            (poem_dialogues() if args.data != "dialogues" else [])
    random.Random(args.seed).shuffle(dialogues)
    n_test = max(2, len(dialogues) // 10)
    test, train = dialogues[:n_test], dialogues[n_test:]
    if args.limit:
        train, test = train[: args.limit], test[: max(2, args.limit // 5)]
    model, tokenizer = model_and_tokenizer(args, [t for d in train for t in d], out, application="lm", with_mlm=True)
    enc = lambda ds: [encode(tokenizer, d, args.maxlen) for d in ds]  # noqa: E731
    train_enc, test_enc = enc(train), enc(test)
    history = fit(model, train_enc, lambda chunk: response_loss(model, tokenizer, chunk)[0], args.epochs, args.lr,
                  args.batch_size, args.seed, not args.no_progress,
                  length=lambda e: len(e[0]))
    nll = n = 0
    with torch.no_grad():
        for chunk in batches(test_enc, 32):
            s, k = response_loss(model, tokenizer, chunk, reduction="sum")
            nll, n = nll + float(s), n + k
    gen = torch.Generator().manual_seed(args.seed)
    examples = [{"context": d[:-1][-3:], "gold": d[-1], "reply": reply(model, tokenizer, d[:-1], args.maxlen,
                                                                        generator=gen)} for d in test[:5]]
    metrics = {"task": "dialogue", "data": args.tsv or f"fortunes-zh ({args.data})", "n_train": len(train),
               "n_eval": len(test), "checkpoint": args.checkpoint, "epochs": args.epochs, "loss": history,
               "eval_response_perplexity": math.exp(nll / max(1, n)), "examples": examples,
               "decoder": "kexue.generation top-8 sampling", "seconds": timer.seconds()}
    write_metrics(out, metrics)
    return 0
