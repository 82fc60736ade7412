"""Multi-turn dialogue with a causal LM (DialoGPT style, as in bert4keras's ``task_conversation``):
《动手做个DialoGPT：基于LM的生成式多轮对话模型》.

A dialogue u_1, …, u_n becomes ``[CLS] u_1 [SEP] u_2 [SEP] … u_n [SEP]`` with segment ids alternating
0/1 by speaker, and the LM learns p(u_k | u_<k) by next-token prediction on the responses (turns
k ≥ 2). Replying = sampling a continuation of ``[CLS] context… [SEP]`` until ``[SEP]``.

Data: ``--train FILE`` (plain text, one turn per line, a blank line between dialogues; ``--dev``
the same), or by default what fortunes-zh
offers — its 36 speaker-tagged exchanges (``甲：… / 乙：…``) plus the Tang/Song poems read line by
line as 联句 (each line answering the previous one). Score: held-out response perplexity.
The saved model replies through ``kexue chat DIR`` or ``kexue predict DIR '["turn 1", "turn 2"]'``.
"""
from __future__ import annotations

import json
import math
import random
import re

import torch
from tqdm import tqdm

from kexue.losses.language_model import next_token_loss
from kexue.recipes import args as at
from kexue.data import shipped as datasets
from kexue.recipes.predictor import Predictor
from kexue.io import fingerprint
from kexue.recipes.common import (Metric, Timer, backbone, batches, checked_card, command, pad, parse, recipe_args,
                                  setup, start_run, tokenizer_for, vocabulary)
from kexue.data.files import read_dialogues, require
from kexue.recipes.folder import load_backbone, read_task, save_task_model
from kexue.generation import GenerationOptions, PrefixDecoding, decode_state
from kexue.recipes.sampling import Decoding, special_ids, task_options

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
    """(next-token NLL on every turn after the first (the responses), ``reduction`` ``"mean"`` or ``"sum"``;
    the number of response tokens)."""
    batch = pad(encoded, tokenizer.pad_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = model(ids, batch["segment_ids"], mask).logits
    # the tokens after the first turn's [SEP] (the responses), padding excluded
    reply = torch.zeros_like(ids, dtype=torch.bool)
    reply[:, 1:] = ((ids == tokenizer.sep_id).long().cumsum(1) >= 1)[:, :-1] & (mask[:, 1:] == 1)
    return next_token_loss(logits, ids, reply, reduction), int(reply.sum())


MIN_REPLY = 2  # min_new_tokens of a reply


def reply_options(given: dict, defaults: dict | None = None) -> GenerationOptions:
    """A reply's :class:`GenerationOptions`: ``given`` over ``defaults`` (the folder's saved settings) over
    32 new tokens at most, ``MIN_REPLY`` at least; sampled (seed 0 unless given) unless ``num_beams > 1``."""
    return task_options(given, {"max_new_tokens": 32, **(defaults or {})}, min_new_tokens=MIN_REPLY)


def reply_state(model, tokenizer, context: list[str], maxlen: int, options: GenerationOptions) -> PrefixDecoding:
    """The decoding state of the reply to ``context``: ``[CLS] u_1 [SEP] … u_n [SEP]`` (oldest turns dropped
    so that ``max_new_tokens`` fit in ``maxlen``), the reply spoken by speaker ``len(context) % 2``."""
    ids, segs = encode(tokenizer, context, maxlen - options.max_new_tokens)
    return PrefixDecoding(model, torch.tensor([ids]), None, torch.tensor([segs]), banned_ids=special_ids(tokenizer),
                          new_segment=len(context) % 2)  # the reply is spoken by the next speaker


@torch.no_grad()
def reply(model, tokenizer, context: list[str], maxlen: int = 128, options: GenerationOptions | None = None) -> str:
    """The next turn after ``context`` (spoken by speaker ``len(context) % 2``); ``options`` default to
    :func:`reply_options` ``({})``."""
    options = options or reply_options({})
    state = reply_state(model, tokenizer, context, maxlen, options)
    return tokenizer.decode(decode_state(state, options, tokenizer.sep_id)[0])


class DialoguePredictor(Predictor):
    """``predict([["turn 1", "turn 2", …], "a single turn"])`` -> ``[{"context", "reply"}]``; options: the
    generation options but ``num_samples`` (one reply per context)."""

    task, model_attr = "dialogue", "lm"
    options = tuple(n for n in GenerationOptions.user_options() if n != "num_samples")
    settings_schema = {"maxlen": "integer", "generation": "object"}

    def __init__(self, model, tokenizer, maxlen: int, defaults: dict):
        self.lm, self.tokenizer, self.maxlen, self.defaults = model.eval(), tokenizer, maxlen, defaults

    @classmethod
    def from_folder(cls, directory) -> "DialoguePredictor":
        s = read_task(directory)["settings"]
        model, tokenizer = load_backbone(directory)
        return cls(model, tokenizer, s["maxlen"], s["generation"])

    def check(self, item):
        if isinstance(item, str):
            item = [item]
        if not isinstance(item, list) or not item or not all(isinstance(t, str) and t.strip() for t in item):
            raise ValueError("a dialogue input is a non-empty list of turns (strings), or one turn")
        return item

    def decodings(self, items: list[list[str]], **options) -> list[Decoding]:
        options = reply_options(options, self.defaults)
        if options.max_new_tokens >= self.maxlen - 2:
            raise ValueError(f"max_new_tokens must stay below maxlen - 2 = {self.maxlen - 2}")
        tok, out = self.tokenizer, []
        for ctx in items:
            state = reply_state(self.lm, tok, ctx, self.maxlen, options)
            output = (lambda ctx: lambda rows: {"context": ctx, "reply": tok.decode(rows[0])})(ctx)
            out.append(Decoding(state, options, tok.sep_id, tok.decode, output, int(state.ids.shape[1])))
        return out

    @torch.no_grad()
    def _predict(self, items: list[list[str]], **options) -> list[dict]:
        return [d.output(decode_state(d.state, d.options, d.eos_id))
                for d in tqdm(self.decodings(items, **options), desc="replying", unit="input",
                              disable=not self.progress)]


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Multi-turn dialogue with a causal LM", out="runs/dialogue", epochs=10, lr=2e-3, batch_size=16,
                    data="plain text, one turn per line, a blank line between dialogues")
    p.add_argument("--data", choices=["dialogues", "poems", "both"], default="both",
                   help="fortunes-zh stand-in corpus when no --train is given")
    p.add_argument("--maxlen", type=at.positive_int, default=128, help="longest dialogue in tokens (oldest turns dropped)")
    p.add_argument("--top-k", type=at.positive_int, default=8, help="replies sample from the k most likely characters")
    args = parse(p, argv)
    if args.maxlen < 40:
        p.error("--maxlen must be at least 40 (32 tokens are kept for the reply)")
    out = setup(args)
    timer = Timer()
    if args.train:
        dialogues = read_dialogues(args.train)
    else:
        dialogues = (fortunes_dialogues() if args.data != "poems" else []) + \
            (poem_dialogues() if args.data != "dialogues" else [])
    if args.dev:
        train, test = dialogues, read_dialogues(args.dev)
    else:
        random.Random(args.seed).shuffle(dialogues)
        n_test = max(2, len(dialogues) // 10)
        test, train = dialogues[:n_test], dialogues[n_test:]
    if args.limit:
        train, test = train[: args.limit], test[: max(2, args.limit // 5)]
    require(train, 1, args.train or "the shipped dialogues", "training dialogue", "" if args.dev else
            "the evaluation hold-out takes 10 % of them, at least 2: give 3 or more dialogues, or give --dev")
    tokenizer = tokenizer_for(args, [t for d in train for t in d])
    run = start_run(args, out, "dialogue", n_train=len(train), architecture={"vocabulary": vocabulary(tokenizer)},
                    settings={"data": fingerprint(train), "eval_data": fingerprint(test), "maxlen": args.maxlen})
    if run is None:
        return 0
    model = backbone(args, tokenizer, application="lm", with_mlm=True)
    enc = lambda ds: [encode(tokenizer, d, args.maxlen) for d in ds]  # noqa: E731
    train_enc, test_enc = enc(train), enc(test)

    def perplexity(progress: bool = False) -> dict[str, float]:
        """Per-token perplexity of the held-out responses."""
        nll = n = 0
        for chunk in tqdm(list(batches(test_enc, 32)), desc="scoring", unit="batch", disable=not progress):
            s, k = response_loss(model, tokenizer, chunk, reduction="sum")
            nll, n = nll + float(s), n + k
        return {"perplexity": math.exp(min(nll / max(1, n), 700))}

    trained = run.train(model, train_enc, lambda chunk: response_loss(model, tokenizer, chunk)[0],
                        Metric("perplexity", perplexity, higher=False), length=lambda e: len(e[0]))
    with torch.no_grad():
        final = perplexity(not args.no_progress)
    generation = {"top_k": args.top_k, "max_new_tokens": 32, "seed": args.seed}
    options = reply_options({}, generation)
    replies = [{"context": d[:-1], "reply": reply(model, tokenizer, d[:-1], args.maxlen, options)} for d in test[:5]]
    examples = [{"context": d[:-1][-3:], "gold": d[-1], "reply": r["reply"]} for d, r in zip(test, replies)]
    data = {"train": args.train or f"fortunes-zh ({args.data})", "eval": args.dev or "held-out 10 % of train"}
    metrics = {"task": "dialogue", **data, "n_train": len(train),
               "n_eval": len(test), "checkpoint": args.checkpoint, "epochs": args.epochs, "lr": args.lr,
               "loss": trained.epoch_losses, "eval_response_perplexity": final["perplexity"], "examples": examples,
               "decoder": f"kexue.generation top-{args.top_k} sampling", **trained.metrics(), "seconds": timer.seconds()}
    card = checked_card(run, trained, {
        "command": command(argv, "dialogue"), "data": data, "out": str(out),
        "settings": {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "dialogue", model, tokenizer, {}, None, {"maxlen": args.maxlen, "generation": generation},
                    metrics, trained.losses, card, predictions=replies, overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss", "dev_curve")}, ensure_ascii=False))
    return 0
