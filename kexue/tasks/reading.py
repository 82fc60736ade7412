"""Seq2seq reading comprehension (UniLM) with multi-passage voting, on the WebQA JSON format.

《万能的seq2seq：基于seq2seq的阅读理解问答》: feed ``[CLS] question [SEP] passage [SEP]`` as the
source and generate the answer as the target of a UniLM (prefix-masked) model; a passage without the
answer is trained to emit ``[SEP]`` at once. At test time every passage of a question is decoded
*jointly*: passages whose first token is most likely ``[SEP]`` (no answer) are dropped, and at each
step the next-token distributions of the remaining passages are averaged,

    p(y_t | y_<t) = 1/|P| Σ_{p∈P} p(y_t | y_<t, question, passage_p)

so passages vote on every character. Scores are exact match and character F1 against the gold
answer (the most frequent non-empty passage answer).
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import datasets
from .common import Timer, fit, model_and_tokenizer, pad, recipe_args, setup, write_metrics
from .metrics import answer_em, answer_f1


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
    target = batch["input_ids"][:, 1:].masked_fill(batch["segment_ids"][:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100)


@torch.no_grad()
def vote_decode(model, tokenizer, sources: list[list[int]], max_answer: int = 16) -> str:
    """Greedy joint decoding over all passages of a question with the post's voting."""
    answer: list[int] = []
    active = list(range(len(sources)))
    banned = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id]
    for step in range(max_answer):
        rows = [(sources[i] + answer, [0] * len(sources[i]) + [1] * len(answer)) for i in active]
        batch = pad(rows, tokenizer.pad_id)
        # the last real token of each row (the source's [SEP] at step 0) predicts the next answer token
        logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).logits
        last = batch["attention_mask"].sum(1) - 1
        probs = logits[torch.arange(len(rows)), last].softmax(-1)
        probs[:, banned] = 0
        if step == 0:
            keep = [r for r in range(len(rows)) if probs[r].argmax() != tokenizer.sep_id]
            if not keep:
                return ""
            active = [active[r] for r in keep]
            probs = probs[keep]
        token = int(probs.mean(0).argmax())
        if token == tokenizer.sep_id:
            break
        answer.append(token)
    return tokenizer.decode(answer)


def gold_answer(record: dict) -> str:
    answers = Counter(p["answer"] for p in record["passages"] if p["answer"])
    return answers.most_common(1)[0][0] if answers else ""


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Seq2seq (UniLM) reading comprehension with multi-passage voting, WebQA format",
                    out="runs/reading", epochs=40, lr=1e-3, batch_size=16)
    p.add_argument("--train", help="WebQA-format JSON for training (default: webqa-sample/sample.json)")
    p.add_argument("--eval", help="WebQA-format JSON for evaluation (default: the training file)")
    p.add_argument("--maxlen", type=int, default=192, help="source length: [CLS] question [SEP] passage [SEP]")
    p.add_argument("--max-answer", type=int, default=16)
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    train_recs = datasets.webqa(args.train)
    eval_recs = datasets.webqa(args.eval) if args.eval else train_recs
    if args.limit:
        train_recs, eval_recs = train_recs[: args.limit], eval_recs[: args.limit]
    texts = [r["question"] for r in train_recs] + [q["passage"] + q["answer"] for r in train_recs for q in r["passages"]]
    model, tokenizer = model_and_tokenizer(args, texts, out, application="unilm", with_mlm=True)
    train = examples(train_recs, tokenizer, args.maxlen)
    history = fit(model, train, lambda chunk: seq2seq_loss(model, tokenizer, chunk), args.epochs, args.lr,
                  args.batch_size, args.seed, not args.no_progress,
                  length=lambda e: len(e[0]) + len(e[1]))
    model.eval()
    preds = []
    for rec in eval_recs:
        sources = [source_ids(tokenizer, rec["question"], q["passage"], args.maxlen) for q in rec["passages"]]
        pred = vote_decode(model, tokenizer, sources, args.max_answer)
        preds.append({"question": rec["question"], "pred": pred, "gold": gold_answer(rec)})
    metrics = {"task": "reading", "train": args.train or "webqa-sample/sample.json",
               "eval": args.eval or args.train or "webqa-sample/sample.json (same as train: format fixture)",
               "n_train_passages": len(train), "n_eval_questions": len(preds), "checkpoint": args.checkpoint,
               "epochs": args.epochs, "loss": history,
               "em": sum(answer_em(x["pred"], x["gold"]) for x in preds) / max(1, len(preds)),
               "f1": sum(answer_f1(x["pred"], x["gold"]) for x in preds) / max(1, len(preds)),
               "predictions": preds, "seconds": timer.seconds()}
    write_metrics(out, metrics)
    return 0
