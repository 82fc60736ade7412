"""Seq2seq reading comprehension (UniLM) with multi-passage voting, on the WebQA JSON format.

《万能的seq2seq：基于seq2seq的阅读理解问答》: feed ``[CLS] question [SEP] passage [SEP]`` as the
source and generate the answer as the target of a UniLM (prefix-masked) model; a passage without the
answer is trained to emit ``[SEP]`` at once. At test time every passage of a question is decoded
*jointly*: passages whose first token is most likely ``[SEP]`` (no answer) are dropped, and at each
step the next-token distributions of the remaining passages are averaged,

    p(y_t | y_<t) = 1/|P| Σ_{p∈P} p(y_t | y_<t, question, passage_p)

so passages vote on every character. Scores are exact match and character F1 against the gold
answer (the most frequent non-empty passage answer). The saved model answers
``{"question": ..., "passages": [...]}`` inputs through ``kexue predict``.
"""
from __future__ import annotations

import json
from collections import Counter

import torch
from torch import Tensor
from tqdm import tqdm

from kexue.losses.language_model import next_token_loss
from kexue.recipes import args as at
from kexue.data import shipped as datasets
from kexue.generation import decoding_state
from kexue.recipes.predictor import Predictor
from kexue.io import fingerprint
from kexue.recipes.common import (Metric, Timer, backbone, checked_card, command, pad, parse, recipe_args, setup,
                                  start_run, tokenizer_for, vocabulary)
from kexue.data.files import read_webqa
from kexue.recipes.folder import load_backbone, read_task, save_task_model
from kexue.recipes.metrics import answer_em, answer_f1
from kexue.recipes.sampling import special_ids


def source_ids(tokenizer, question: str, passage: str, maxlen: int) -> list[int]:
    ids, _ = tokenizer.encode(question, passage, maxlen=maxlen)  # long passages lose their end
    return ids


def examples(records: list[dict], tokenizer, maxlen: int) -> list[tuple[list[int], list[int]]]:
    """(source ids, target ids = answer + [SEP]) for every passage; empty answers -> just [SEP]."""
    out = []
    for rec in records:
        for p in rec["passages"]:
            target = tokenizer.encode(p["answer"])[0][1:] if p["answer"] else [tokenizer.sep_id]
            out.append((source_ids(tokenizer, rec["question"], p["passage"], maxlen), target))
    return out


def seq2seq_loss(model, tokenizer, chunk) -> Tensor:
    """Cross-entropy on the target tokens only (segment 1), each predicted from the position before."""
    batch = pad([(s + t, [0] * len(s) + [1] * len(t)) for s, t in chunk], tokenizer.pad_id)
    logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).logits
    return next_token_loss(logits, batch["input_ids"], batch["segment_ids"] == 1)


@torch.no_grad()
def vote_decode(model, tokenizer, sources: list[list[int]], max_answer: int = 16) -> str:
    """Greedy joint decoding over all passages of a question with the post's voting (KV-cached)."""
    P, L = len(sources), max(map(len, sources))
    ids = torch.full((P, L), tokenizer.pad_id)
    mask = torch.zeros(P, L, dtype=torch.long)
    for r, src in enumerate(sources):  # left padding: every row's next token sits in the last column
        ids[r, L - len(src):], mask[r, L - len(src):] = torch.tensor(src), 1
    state = decoding_state(model, ids, mask, torch.zeros_like(ids), banned_ids=special_ids(tokenizer))
    probs = state.prefill().float().softmax(-1)
    answering = (probs.argmax(-1) != tokenizer.sep_id).nonzero()[:, 0]  # first token [SEP] = no answer here
    if len(answering) == 0:
        return ""
    state.reorder(answering)
    probs = probs[answering]
    answer: list[int] = []
    for _ in range(max_answer):
        token = int(probs.mean(0).argmax())  # the passages vote with their probabilities
        if token == tokenizer.sep_id:
            break
        answer.append(token)
        probs = state.step(torch.full((len(answering),), token)).float().softmax(-1)
    return tokenizer.decode(answer)


def gold_answer(record: dict) -> str:
    answers = Counter(p["answer"] for p in record["passages"] if p["answer"])
    return answers.most_common(1)[0][0] if answers else ""


def answer(model, tokenizer, record: dict, maxlen: int, max_answer: int) -> dict:
    """``{"question", "answer"}`` for a ``{"question", "passages": [{"passage"}]}`` record."""
    sources = [source_ids(tokenizer, record["question"], q["passage"], maxlen) for q in record["passages"]]
    return {"question": record["question"], "answer": vote_decode(model, tokenizer, sources, max_answer)}


class ReadingPredictor(Predictor):
    """``predict([{"question": q, "passages": ["…", {"passage": "…"}]}])`` -> ``[{"question", "answer"}]``
    (empty answer: no passage holds one); option ``max_new_tokens`` (the longest answer)."""

    task, model_attr = "reading", "unilm"
    options = ("max_new_tokens",)
    settings_schema = {"maxlen": "integer", "max_answer": "integer"}

    def __init__(self, model, tokenizer, maxlen: int, max_answer: int):
        self.unilm, self.tokenizer, self.maxlen, self.max_answer = model.eval(), tokenizer, maxlen, max_answer

    @classmethod
    def from_folder(cls, directory) -> "ReadingPredictor":
        s = read_task(directory)["settings"]
        model, tokenizer = load_backbone(directory)
        return cls(model, tokenizer, s["maxlen"], s["max_answer"])

    def check(self, item):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
            raise ValueError('a reading input is {"question": "...", "passages": ["...", ...]}')
        ps = item.get("passages")
        if not isinstance(ps, list) or not ps:
            raise ValueError("a reading input needs a non-empty 'passages' list")
        passages = []
        for p in ps:
            text = p.get("passage") if isinstance(p, dict) else p
            if not isinstance(text, str):
                raise ValueError('each passage is a string or {"passage": "..."}')
            passages.append({"passage": text})
        return {"question": item["question"], "passages": passages}

    def _predict(self, items: list[dict], max_new_tokens: int | None = None) -> list[dict]:
        longest = self.max_answer if max_new_tokens is None else max_new_tokens
        return [answer(self.unilm, self.tokenizer, x, self.maxlen, longest)
                for x in tqdm(items, desc="answering", unit="question", disable=not self.progress)]


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Seq2seq (UniLM) reading comprehension with multi-passage voting, WebQA format",
                    out="runs/reading", epochs=40, lr=1e-3, batch_size=16,
                    data="WebQA JSON, [{question, passages: [{passage, answer}]}]")
    p.add_argument("--maxlen", type=at.positive_int, default=192, help="source length: [CLS] question [SEP] passage [SEP]")
    p.add_argument("--max-answer", type=at.positive_int, default=16, help="longest answer, in tokens")
    args = parse(p, argv)
    if args.maxlen < 4:
        p.error("--maxlen must be at least 4 ([CLS] q [SEP] p [SEP])")
    out = setup(args)
    timer = Timer()
    train_recs = read_webqa(args.train) if args.train else datasets.webqa()
    eval_recs = read_webqa(args.dev) if args.dev else train_recs
    if args.limit:
        train_recs, eval_recs = train_recs[: args.limit], eval_recs[: args.limit]
    texts = [r["question"] for r in train_recs] + [q["passage"] + q["answer"] for r in train_recs for q in r["passages"]]
    tokenizer = tokenizer_for(args, texts)
    run = start_run(args, out, "reading", n_train=sum(len(r["passages"]) for r in train_recs),
                    architecture={"vocabulary": vocabulary(tokenizer)},
                    settings={"data": fingerprint(train_recs), "eval_data": fingerprint(eval_recs),
                              "maxlen": args.maxlen, "max_answer": args.max_answer})
    if run is None:
        return 0
    model = backbone(args, tokenizer, application="unilm", with_mlm=True)
    train = examples(train_recs, tokenizer, args.maxlen)
    golds = [gold_answer(rec) for rec in eval_recs]

    def answers(progress: bool = False) -> list[dict]:
        return [answer(model, tokenizer, rec, args.maxlen, args.max_answer)
                for rec in tqdm(eval_recs, desc="answering", unit="question", disable=not progress)]

    def scores(preds: list[dict]) -> dict[str, float]:
        return {"em": sum(answer_em(x["answer"], g) for x, g in zip(preds, golds)) / max(1, len(preds)),
                "f1": sum(answer_f1(x["answer"], g) for x, g in zip(preds, golds)) / max(1, len(preds))}

    trained = run.train(model, train, lambda chunk: seq2seq_loss(model, tokenizer, chunk), Metric("f1", lambda: scores(answers())),
                        length=lambda e: len(e[0]) + len(e[1]))
    preds = answers(not args.no_progress)
    data = {"train": args.train or "webqa-sample/sample.json",
            "eval": args.dev or args.train or "webqa-sample/sample.json (same as train: format fixture)"}
    metrics = {"task": "reading", **data, "n_train_passages": len(train), "n_eval_questions": len(preds),
               "checkpoint": args.checkpoint, "epochs": args.epochs, "lr": args.lr, "loss": trained.epoch_losses,
               **scores(preds), "predictions": [{**x, "gold": g} for x, g in zip(preds, golds)],
               **trained.metrics(), "seconds": timer.seconds()}
    card = checked_card(run, trained, {
        "command": command(argv, "reading"), "data": data, "out": str(out),
        "settings": {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "reading", model, tokenizer, {}, None, {"maxlen": args.maxlen, "max_answer": args.max_answer},
                    metrics, trained.losses, card, predictions=preds, overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss", "predictions", "dev_curve")},
                     ensure_ascii=False))
    return 0
