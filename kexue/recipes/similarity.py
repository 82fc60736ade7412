"""``kexue similarity``: a sentence encoder trained on the user's labelled pairs with CoSENT, SBERT's softmax
classifier or cosine regression (:mod:`kexue.similarity.pair_training`, 《CoSENT（一）：比Sentence-BERT更有效的句向量方案》),
saved as an encoder folder that ``kexue embed / search / predict / evaluate`` and ``kexue.load`` use. It trains
in a resumable run folder like every recipe (:mod:`kexue.recipes.common`): with ``--dev`` the Spearman of
cosine is scored after every epoch (or ``--eval-every`` updates) and the best evaluation's encoder is saved; what
the dev pairs share with the training pairs (:func:`kexue.data.splits.split_report`) is printed and recorded.
An epoch's remainder batch under half ``--batch-size`` joins the batch before it
(:data:`kexue.similarity.pair_training.MERGE_REMAINDER`): no update on one or two leftover pairs."""
from __future__ import annotations

import json

from kexue.data.files import require
from kexue.data.pairs import read_pairs
from kexue.io import fingerprint
from kexue.models.pretrained import embed
from kexue.recipes import args as at
from kexue.recipes.common import (Metric, Timer, backbone, checked_card, command, parse, recipe_args, setup, start_run,
                                  tokenizer_for, vocabulary)
from kexue.recipes.folder import save_task_model
from kexue.similarity.evaluate import evaluate_pairs
from kexue.data.splits import split_report
from kexue.similarity.pair_training import LOSSES, batches_per_epoch, train_pair_encoder


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Train a sentence encoder on labelled pairs with CoSENT, SBERT's softmax classifier or cosine "
                    "regression (the CoSENT post's comparison)", out="runs/similarity", epochs=1, lr=1e-3,
                    batch_size=32, shipped_data=False,
                    data="pairs: sentence1<TAB>sentence2<TAB>label lines, or JSON lines with sentence1/sentence2/label")
    p.add_argument("--loss", choices=LOSSES, default="cosent", help="training objective")
    p.add_argument("--steps", type=at.positive_int, default=None, help="optimizer updates (overrides --epochs)")
    p.add_argument("--maxlen", type=at.positive_int, default=64, help="longest sentence in tokens")
    args = parse(p, argv)
    out = setup(args)
    timer = Timer()
    train = read_pairs(args.train)[: args.limit]
    dev = read_pairs(args.dev)[: args.limit] if args.dev else None
    if args.loss != "cosine":  # both compare pairs of different labels: one label teaches nothing
        require(sorted({q.score for q in train}), 2, args.train, "distinct label",
                "CoSENT ranks pairs of different labels" if args.loss == "cosent" else "SBERT tells labels apart")
    overlap = None
    if dev is not None:
        require(dev, 2, args.dev, "pair", "Spearman's correlation needs 2")
        overlap = split_report(train, dev)  # a dev pair whose sentence was trained on flatters the dev score
        print(overlap.line(f"kexue similarity: {args.train} / {args.dev}"))
    tokenizer = tokenizer_for(args, [s for q in train for s in (q.a, q.b)])
    run = start_run(args, out, "similarity", n_train=len(train),
                    architecture={"vocabulary": vocabulary(tokenizer), "loss": args.loss},
                    settings={"data": fingerprint([(q.a, q.b, float(q.score)) for q in train]),
                              "eval_data": fingerprint(dev) if dev else None, "maxlen": args.maxlen},
                    per_epoch=batches_per_epoch(len(train), args.batch_size))
    if run is None:
        return 0
    encoder = backbone(args, tokenizer)
    metric = None
    if dev:
        metric = Metric("spearman", lambda: {"spearman": evaluate_pairs(
            lambda texts: embed(encoder, tokenizer, texts, maxlen=args.maxlen), dev)})
    run.prepare(metric, encoder)
    options = run.fit_options()
    loop = {k: options.pop(k) for k in ("callbacks", "eval_every", "progress", "seed", "desc")}
    history = run.run_fit(lambda: train_pair_encoder(
        encoder, tokenizer, train, args.loss, run.steps, args.epochs, args.batch_size, args.lr, args.maxlen,
        loop["seed"], None, loop["eval_every"], loop["progress"], warmup=args.warmup, callbacks=loop["callbacks"],
        desc=loop["desc"], settings=run.record, **options))
    trained = run.finish(history, encoder)
    data = {"train": args.train, "dev": args.dev or "none"}
    metrics = {"task": "encoder", "loss_function": args.loss, **data, "n_train": len(train),
               "n_dev": len(dev) if dev else 0, "checkpoint": args.checkpoint, "lr": args.lr,
               "steps": len(history["loss"]), "dev_spearman_curve": [{"step": r["step"], "spearman": r["spearman"]}
                                                                     for r in trained.evals],
               **trained.metrics(), "seconds": timer.seconds()}
    if dev:
        metrics["dev_spearman"] = metric.evaluate()["spearman"]  # the saved encoder's
        metrics["dev_overlap"] = overlap.as_dict()
    card = checked_card(run, trained, {
        "command": command(argv, "similarity"), "data": data,
        "settings": {"loss": args.loss, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "encoder", encoder, tokenizer, {}, None, {"maxlen": args.maxlen}, metrics, trained.losses,
                    card, overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k != "dev_curve"}, ensure_ascii=False, indent=1))
    return 0
