"""``kexue similarity``: a sentence encoder trained on the user's labelled pairs with CoSENT, SBERT's softmax
classifier or cosine regression (:mod:`kexue.similarity.pair_training`, 《CoSENT（一）：比Sentence-BERT更有效的句向量方案》),
saved as an encoder folder that ``kexue embed / search / predict / evaluate`` and ``kexue.load`` use."""
from __future__ import annotations

import json

from kexue.data.pairs import read_pairs
from kexue.models.pretrained import SHIPPED, shipped
from kexue.recipes import args as at
from kexue.recipes.common import Timer, command, model_and_tokenizer, setup
from kexue.recipes.folder import save_task_model
from kexue.similarity.pair_training import LOSSES, train_pair_encoder


def main(argv: list[str] | None = None) -> int:

    p = at.ArgumentParser(prog="kexue similarity", description="Train a sentence encoder on labelled pairs with "
                          "CoSENT, SBERT's softmax classifier or cosine regression (the CoSENT post's comparison)")
    p.add_argument("--train", type=at.input_file, metavar="FILE", required=True,
                   help="pairs: sentence1<TAB>sentence2<TAB>label lines, or JSON lines with sentence1/sentence2/label")
    p.add_argument("--dev", type=at.input_file, metavar="FILE", help="pairs to score by Spearman (same formats)")
    p.add_argument("--loss", choices=LOSSES, default="cosent", help="training objective")
    p.add_argument("--checkpoint", type=at.model_or_shipped, metavar="DIR",
                   help="starting point: an HF-layout folder, 'minilm' or 'zh-mini' (default: a small model from scratch)")
    p.add_argument("--family", default="roformer", choices=["bert", "roformer", "roformer_v2"],
                   help="family of the from-scratch model (without --checkpoint)")
    p.add_argument("--out", default="runs/similarity", metavar="DIR", help="output folder: the trained encoder")
    p.add_argument("--overwrite", action="store_true", help="replace a model already saved in --out")
    p.add_argument("--epochs", type=at.positive_int, default=1, help="passes over the training pairs")
    p.add_argument("--steps", type=at.positive_int, default=None, help="optimizer updates (overrides --epochs)")
    p.add_argument("--lr", type=at.positive_float, default=None,
                   help="peak learning rate (default: 2e-5 from a checkpoint, 1e-3 from scratch)")
    p.add_argument("--batch-size", type=at.positive_int, default=32, help="pairs per step")
    p.add_argument("--maxlen", type=at.positive_int, default=64, help="longest sentence in tokens")
    p.add_argument("--eval-every", type=at.positive_int, default=None, help="score --dev every N updates too")
    p.add_argument("--limit", type=at.positive_int, default=None, help="use only the first N train/dev pairs")
    p.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation and shuffling")
    p.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    train = read_pairs(args.train)[: args.limit]
    dev = read_pairs(args.dev)[: args.limit] if args.dev else None

    start = shipped(args.checkpoint) if args.checkpoint in SHIPPED else None
    if start is None:
        ns = type("A", (), {"checkpoint": args.checkpoint, "family": args.family})
        start = model_and_tokenizer(ns, [s for q in train for s in (q.a, q.b)])
    encoder, tokenizer = start
    lr = args.lr or (2e-5 if args.checkpoint else 1e-3)
    history = train_pair_encoder(encoder, tokenizer, train, args.loss, args.steps, args.epochs, args.batch_size, lr,
                                 args.maxlen, args.seed, dev, args.eval_every, not args.no_progress)
    data = {"train": args.train, "dev": args.dev or "none"}
    metrics = {"task": "encoder", "loss_function": args.loss, **data, "n_train": len(train),
               "n_dev": len(dev) if dev else 0, "checkpoint": args.checkpoint, "steps": len(history["loss"]),
               "dev_spearman_curve": history["eval"], "seconds": timer.seconds()}
    if dev:
        metrics["dev_spearman"] = history["eval"][-1]["spearman"]
    save_task_model(out, "encoder", encoder, tokenizer, {}, None, {"maxlen": args.maxlen}, metrics,
                    [float(x) for x in history["loss"]],
                    {"command": command(argv, "similarity"), "data": data,
                     "settings": {"loss": args.loss, "lr": lr, "batch_size": args.batch_size,
                                  "checkpoint": args.checkpoint or args.family + " from scratch"}},
                    overwrite=args.overwrite)
    print(json.dumps(metrics, ensure_ascii=False, indent=1))
    return 0
