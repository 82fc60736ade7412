"""``kexue similarity``: a sentence encoder trained on the user's labelled pairs with CoSENT, SBERT's softmax
classifier or cosine regression (:mod:`kexue.similarity.pair_training`, 《CoSENT（一）：比Sentence-BERT更有效的句向量方案》),
or contrastively (:mod:`kexue.similarity.contrastive_training`, 《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》):
``--loss infonce`` on ``anchor<TAB>positive[<TAB>negative...]`` lines (or the label-1 pairs of a pair file, with
in-batch negatives; ``kexue mine`` adds hard negatives) and ``--loss simcse`` (unsupervised: two dropout views
of each sentence of a plain sentence file, or of a pair file's sentences), saved as an encoder folder that ``kexue embed / search / predict / evaluate`` and ``kexue.load`` use. It trains
in a resumable run folder like every recipe (:mod:`kexue.recipes.common`): with ``--dev`` the Spearman of
cosine is scored after every epoch (or ``--eval-every`` updates) and the best evaluation's encoder is saved; what
the dev pairs share with the training pairs (:func:`kexue.data.splits.split_report`) is printed and recorded.
An epoch's remainder batch under half ``--batch-size`` joins the batch before it
(:data:`kexue.similarity.pair_training.MERGE_REMAINDER`): no update on one or two leftover pairs."""
from __future__ import annotations

import json

from kexue.data.files import require
from kexue.data.pairs import read_pairs
from kexue.data.triplets import read_sentences, read_triplets
from kexue.io import fingerprint
from kexue.models.pretrained import embed
from kexue.recipes import args as at
from kexue.recipes.common import (Metric, Timer, backbone, checked_card, command, parse, recipe_args, setup, start_run,
                                  tokenizer_for, vocabulary)
from kexue.recipes.folder import save_task_model
from kexue.similarity.evaluate import evaluate_pairs
from kexue.data.splits import split_report
from kexue.similarity.contrastive_training import CONTRASTIVE_LOSSES, SCALE, train_contrastive_encoder
from kexue.similarity.pair_training import LOSSES, batches_per_epoch, train_pair_encoder

DATA = ("pairs: sentence1<TAB>sentence2<TAB>label lines, or JSON lines with sentence1/sentence2/label; --loss "
        "infonce: anchor<TAB>positive[<TAB>negative...] lines, or a pair file (its label-1 pairs); --loss simcse: one "
        "sentence per line, or a pair file (its sentences); --dev is a labelled pair file for every loss")


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Train a sentence encoder on labelled pairs with CoSENT, SBERT's softmax classifier or cosine "
                    "regression (the CoSENT post's comparison), or contrastively: InfoNCE on (anchor, positive"
                    "[, negatives]) and unsupervised SimCSE on sentences", out="runs/similarity", epochs=1, lr=1e-3,
                    batch_size=32, shipped_data=False, data=DATA,
                    supports=("rdrop",), why_not={"vat": "VAT keeps a classifier's predicted distribution steady; a "
                                                         "sentence encoder's output is a vector"})
    p.add_argument("--loss", choices=LOSSES + CONTRASTIVE_LOSSES, default="cosent",
                   help="training objective: cosent, sbert, cosine on labelled pairs; infonce (in-batch negatives "
                        "plus each line's hard negatives); simcse (unsupervised, dropout views)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=at.positive_float, default=None,
                       help=f"cosent / infonce / simcse: the cosine scale s = 1/τ (default: {SCALE:g}, the posts' "
                            f"τ = {1 / SCALE:g})")
    scale.add_argument("--temperature", type=at.positive_float, default=None,
                       help=f"the same as --scale 1/T (default: {1 / SCALE:g})")
    p.add_argument("--positive-min", type=at.finite_float, default=None, metavar="SCORE",
                   help="--loss infonce on a pair file with graded scores: pairs scoring at least SCORE are positives "
                        "(default: labels must be 0/1, and the 1 pairs are)")
    p.add_argument("--steps", type=at.positive_int, default=None, help="optimizer updates (overrides --epochs)")
    p.add_argument("--maxlen", type=at.positive_int, default=64, help="longest sentence in tokens")
    args = parse(p, argv)
    if args.temperature is not None:
        args.scale = 1 / args.temperature
    if args.scale is not None and args.loss in ("sbert", "cosine"):
        p.error(f"--scale / --temperature set the cosine scale of cosent, infonce and simcse; --loss {args.loss} has none")
    if args.positive_min is not None and args.loss != "infonce":
        p.error("--positive-min picks the positives of a pair file for --loss infonce")
    args.scale = SCALE if args.scale is None else args.scale
    contrastive = args.loss in CONTRASTIVE_LOSSES
    if args.rdrop and args.loss != "sbert":
        p.error(f"--rdrop applies to --loss sbert (a classifier on the pair); --loss {args.loss} scores pairs with no "
                "class distribution to compare")
    if contrastive and (args.layer_lr_decay is not None or args.lr_multiplier):
        p.error(f"--layer-lr-decay / --lr-multiplier: not implemented for --loss {args.loss} (cosent, sbert and "
                "cosine take them)")
    out = setup(args)
    timer = Timer()
    if args.loss == "simcse":
        train = read_sentences(args.train)[: args.limit]
        texts, data_fp = train, fingerprint(train)
    elif args.loss == "infonce":
        train = read_triplets(args.train, args.positive_min)[: args.limit]
        texts = [s for t in train for s in (t.anchor, t.positive, *t.negatives)]
        data_fp = fingerprint([(t.anchor, t.positive, *t.negatives) for t in train])
    else:
        train = read_pairs(args.train)[: args.limit]
        texts, data_fp = [s for q in train for s in (q.a, q.b)], fingerprint([(q.a, q.b, float(q.score)) for q in train])
    dev = read_pairs(args.dev)[: args.limit] if args.dev else None
    if args.loss in ("cosent", "sbert"):  # both compare pairs of different labels: one label teaches nothing
        require(sorted({q.score for q in train}), 2, args.train, "distinct label",
                "CoSENT ranks pairs of different labels" if args.loss == "cosent" else "SBERT tells labels apart")
    if contrastive:
        require(train, 2, args.train, "training example" if args.loss == "infonce" else "distinct sentence",
                f"{args.loss} takes its negatives from the other examples of a batch")
    overlap = None
    if dev is not None:
        require(dev, 2, args.dev, "pair", "Spearman's correlation needs 2")
        if not contrastive:  # a dev pair whose sentence was trained on flatters the dev score
            overlap = split_report(train, dev)
            print(overlap.line(f"kexue similarity: {args.train} / {args.dev}"))
    tokenizer = tokenizer_for(args, texts)
    run = start_run(args, out, "similarity", n_train=len(train),
                    architecture={"vocabulary": vocabulary(tokenizer), "loss": args.loss},
                    settings={"data": data_fp, "eval_data": fingerprint(dev) if dev else None, "maxlen": args.maxlen,
                              **({"scale": args.scale} if contrastive or args.scale != SCALE else {})},
                    per_epoch=None if contrastive else batches_per_epoch(len(train), args.batch_size))
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
    if contrastive:
        history = run.run_fit(lambda: train_contrastive_encoder(
            encoder, tokenizer, train, args.loss, run.steps, args.epochs, args.batch_size, args.lr, args.maxlen,
            loop["seed"], loop["progress"], scale=args.scale, warmup=args.warmup, callbacks=loop["callbacks"],
            eval_every=loop["eval_every"], desc=loop["desc"], settings=run.record, **options))
    else:
        history = run.run_fit(lambda: train_pair_encoder(
            encoder, tokenizer, train, args.loss, run.steps, args.epochs, args.batch_size, args.lr, args.maxlen,
            loop["seed"], None, loop["eval_every"], loop["progress"], warmup=args.warmup, callbacks=loop["callbacks"],
            desc=loop["desc"], settings=run.record, scale=args.scale, layer_lr_decay=args.layer_lr_decay,
            lr_multipliers=args.lr_multiplier or (), rdrop=args.rdrop, **options))
    trained = run.finish(history, encoder)
    data = {"train": args.train, "dev": args.dev or "none"}
    metrics = {"task": "encoder", "loss_function": args.loss, **data, "n_train": len(train),
               "n_dev": len(dev) if dev else 0, "checkpoint": args.checkpoint, "lr": args.lr,
               "steps": len(history["loss"]), "dev_spearman_curve": [{"step": r["step"], "spearman": r["spearman"]}
                                                                     for r in trained.evals],
               **trained.metrics(), "seconds": timer.seconds()}
    if args.loss in ("cosent", *CONTRASTIVE_LOSSES):
        metrics["scale"] = args.scale
    if args.loss == "infonce":
        metrics["hard_negatives"] = len(train[0].negatives)
    if dev:
        metrics["dev_spearman"] = metric.evaluate()["spearman"]  # the saved encoder's
        if overlap is not None:
            metrics["dev_overlap"] = overlap.as_dict()
    card = checked_card(run, trained, {
        "command": command(argv, "similarity"), "data": data,
        "settings": {"loss": args.loss, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
                     "checkpoint": args.checkpoint or args.family + " from scratch"}})
    save_task_model(out, "encoder", encoder, tokenizer, {}, None, {"maxlen": args.maxlen}, metrics, trained.losses,
                    card, overwrite=True)
    print(json.dumps({k: v for k, v in metrics.items() if k != "dev_curve"}, ensure_ascii=False, indent=1))
    return 0
