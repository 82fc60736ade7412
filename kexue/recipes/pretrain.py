"""``kexue pretrain``: MLM (whole-word masking) or UniLM pretraining on a folder of text
(:mod:`kexue.pretraining.objectives`, bert4keras ``pretraining/``), resumable through :func:`kexue.train.fit`;
``torchrun --nproc_per_node N -m kexue pretrain ...`` for several processes.

``--out`` ends as one model folder (:func:`kexue.recipes.folder.save_model_folder`: config, weights, vocab.txt,
manifest.json) holding the run folder ``train/`` (checkpoints, settings and the run's working ``vocab.txt``,
so an unfinished run never touches the model a previous run saved)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from kexue.pretraining.objectives import UniLMPairs, WholeWordMLM, build_char_vocab, mlm_loss, read_corpus, unilm_loss
from kexue.recipes import args as at
from kexue.text.tokenizer import Tokenizer, build_vocab


#: settings the model's shape depends on: never changed by --resume (--overwrite starts over)
SHAPE = ("vocab", "init", "family", "hidden", "layers", "heads")


def run_settings(args: argparse.Namespace, texts: list[str]) -> dict:
    """What the run records besides fit's own settings (checked before anything is built)."""
    from kexue.io import fingerprint

    return {"corpus": fingerprint(texts), "vocab": fingerprint(Path(args.vocab)) if args.vocab else "from corpus",
            "objective": args.objective, "init": str(args.init) if args.init else None, "family": args.family,
            "hidden": args.hidden, "layers": args.layers, "heads": args.heads, "maxlen": args.maxlen,
            "batch_size": args.batch_size, "grad_accum": args.grad_accum, "seed": args.seed, "lr": args.lr,
            "weight_decay": args.weight_decay, "warmup": args.warmup, "optimizer_name": args.optimizer}


def _vocab_for_run(args: argparse.Namespace, texts: list[str], out: Path, settings: dict, overwrite: bool) -> Tokenizer:
    """The tokenizer of the run in ``out`` (whose settings :func:`kexue.recipes.common.plan_run` checked):
    a vocabulary built from another corpus is never reused silently."""
    from kexue.io import clean_stale_temp
    from kexue.train.state import read_settings

    run = out / "train"
    working = run / "vocab.txt"
    if args.vocab:
        return Tokenizer(args.vocab)
    vocab = working if working.exists() else out / "vocab.txt"  # a run of an older kexue kept it in --out
    old = read_settings(run)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes; the others read the
        # vocabulary rank 0 keeps, or build the same one in memory that rank 0 writes
        if vocab.exists() and not overwrite and (old is not None or args.resume):
            return Tokenizer(vocab)
        return Tokenizer(build_vocab(texts))
    clean_stale_temp(out)
    if vocab.exists() and not overwrite:
        if old is None and not args.resume:
            raise ValueError(f"{vocab} exists but {out} holds no recorded run: pass --resume to train with that "
                             "vocabulary, --overwrite to build one from this corpus, or --vocab FILE")
        tok = Tokenizer(vocab)
        if old is None or old.get("corpus") != settings["corpus"]:
            unk = sum(tok.token_to_id(c) == tok.unk_id for t in texts for c in t if not c.isspace())
            n = sum(not c.isspace() for t in texts for c in t)
            print(f"pretrain: --resume keeps the vocabulary in {vocab}: {unk / max(1, n):.1%} of this corpus' "
                  "characters are [UNK] in it", file=sys.stderr)
        return tok
    return build_char_vocab(texts, working)


#: the shortest --maxlen under which each objective has something to learn
MIN_MAXLEN = {"mlm": (3, "[CLS], one token to mask, [SEP]"),
              "unilm": (5, "[CLS] source [SEP] target [SEP], one token of each")}


def check_learnable(args: argparse.Namespace, texts: list[str] | None = None, collate=None) -> None:
    """Refuse, naming the setting, a run that could learn nothing and would save its initial weights as
    pretrained: a ``--maxlen`` too short to hold a token to predict (checked first, ``texts=None``), or (MLM) a
    corpus none of whose texts has a word that fits in it (every batch would mask nothing: loss 0, no gradient)."""
    need, why = MIN_MAXLEN[args.objective]
    if args.maxlen < need:
        raise at.UsageError(f"--maxlen {args.maxlen}: {args.objective} needs at least {need} ({why})")
    if texts is not None and args.objective == "mlm" and not any(collate.word_ids(t) for t in texts):
        raise at.UsageError(f"--data {args.data}: no text has a word that fits in --maxlen {args.maxlen} "
                            f"({args.maxlen - 2} token{'s' if args.maxlen > 3 else ''} besides [CLS] and [SEP]): "
                            "nothing could be masked")


def main(argv: list[str] | None = None) -> int:
    from kexue.io import folder_info
    from kexue.models import build_model, set_recompute
    from kexue.optim import Lion, adamw_preset
    from kexue.recipes.common import checkpoint_folder, plan_run
    from kexue.recipes.folder import save_model_folder
    from kexue.train.loop import fit

    ap = at.ArgumentParser(prog="kexue pretrain", description="MLM (whole-word masking) or UniLM "
                                 "seq2seq pretraining on a folder of *.txt files (one passage per line)")
    ap.add_argument("--data", required=True, help="folder of *.txt files")
    ap.add_argument("--objective", choices=("mlm", "unilm"), default="mlm", help="MLM with whole-word masking, or UniLM seq2seq (source<TAB>target lines)")
    ap.add_argument("--out", required=True, help="output folder: config.json, model.safetensors, vocab.txt, "
                    "manifest.json (one unit) and train/ (the resumable run)")
    ap.add_argument("--vocab", help="vocab.txt (default: a character vocab built from the corpus into OUT)")
    ap.add_argument("--init", type=at.model_or_shipped, metavar="MODEL",
                    help="start from this model instead of random weights: a folder (kexue/HF layout), a hub id "
                         "org/name[@revision], or a shipped model: minilm, zh-mini")
    ap.add_argument("--family", default="bert", choices=("bert", "roformer"), help="model family of a model built from scratch")
    ap.add_argument("--hidden", type=at.positive_int, default=128, help="hidden size (from scratch)")
    ap.add_argument("--layers", type=at.positive_int, default=2, help="Transformer layers (from scratch)")
    ap.add_argument("--heads", type=at.positive_int, default=2, help="attention heads (from scratch)")
    ap.add_argument("--maxlen", type=at.positive_int, default=64, help="longest sequence in tokens")
    ap.add_argument("--batch-size", type=at.positive_int, default=16, help="passages per micro-batch")
    ap.add_argument("--grad-accum", type=at.positive_int, default=1, help="micro-batches per optimizer update")
    ap.add_argument("--steps", type=at.positive_int, default=200, help="optimizer updates")
    ap.add_argument("--optimizer", choices=("adamw", "lion"), default="adamw", help="AdamW or Lion (kexue.optim.Lion)")
    ap.add_argument("--lr", type=at.positive_float, default=5e-4, help="peak learning rate")
    ap.add_argument("--weight-decay", type=at.nonnegative_float, default=0.01, help="decoupled weight decay")
    ap.add_argument("--warmup", type=at.nonnegative_int, default=20, help="linear warm-up updates")
    ap.add_argument("--checkpoint-every", type=at.positive_int, default=50, help="updates between checkpoints of the resumable run")
    ap.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation, masking and shuffling")
    ap.add_argument("--bf16", choices=("off", "auto", "on"), default="off",
                    help="bfloat16 autocast: auto = only where the hardware has it natively")
    ap.add_argument("--skip-nonfinite", action="store_true",
                    help="skip (and count) steps with a non-finite loss or gradient instead of stopping")
    at.run_folder_args(ap)
    ap.add_argument("--recompute", action="store_true",
                    help="gradient checkpointing per Transformer block: less activation memory, one more forward pass "
                         "(the same result, so not a run setting)")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)
    check_learnable(args)

    out = Path(args.out)
    if int(os.environ.get("RANK", "0")) == 0:
        from kexue.io import recover_folder

        recover_folder(out)  # what a killed save of --out left beside it
    texts = read_corpus(args.data)
    settings = run_settings(args, texts)
    overwrite = plan_run(out / "train", out, {**settings, "steps": args.steps}, resume=args.resume,
                         overwrite=args.overwrite, desc="kexue pretrain", fixed=SHAPE)
    if overwrite is None:
        return 0
    tok = _vocab_for_run(args, texts, out, settings, overwrite)
    application = "unilm" if args.objective == "unilm" else "encoder"
    torch.manual_seed(args.seed)
    if args.init:
        model = build_model(checkpoint=checkpoint_folder(args.init), application=application, with_mlm=True).float()
    else:
        cfg = dict(model_type=args.family, vocab_size=tok.vocab_size, hidden_size=args.hidden,
                   num_hidden_layers=args.layers, num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                   max_position_embeddings=max(512, args.maxlen), type_vocab_size=2)
        model = build_model(cfg, application=application, with_mlm=True)
    if args.recompute:
        set_recompute(model)
    collate = WholeWordMLM(tok, args.maxlen) if args.objective == "mlm" else UniLMPairs(tok, args.maxlen)
    check_learnable(args, texts, collate)
    data = torch.utils.data.DataLoader(texts, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                                       drop_last=len(texts) >= args.batch_size)
    preset = adamw_preset(model.parameters(), args.lr, args.steps, warmup=args.warmup, weight_decay=args.weight_decay,
                          schedule="linear", clip_norm=1.0,
                          optimizer_class=Lion if args.optimizer == "lion" else torch.optim.AdamW)
    history = fit(model, mlm_loss if args.objective == "mlm" else unilm_loss, data, steps=args.steps,
                  grad_accum=args.grad_accum, checkpoint_dir=out / "train", checkpoint_every=args.checkpoint_every,
                  progress=not args.no_progress, seed=args.seed, resume=args.resume, overwrite=overwrite,
                  on_nonfinite="skip" if args.skip_nonfinite else "stop",
                  bf16={"off": False, "auto": "auto", "on": True}[args.bf16], desc=f"pretrain {args.objective}",
                  **preset.fit_options(settings))
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        kind = "generator" if application == "unilm" else "encoder"
        save_model_folder(out, folder_info(kind, pooling="mean" if kind == "encoder" else None,
                                           post_processing={"normalize": {}} if kind == "encoder" else None), backbone=model,
                          tokenizer=tok, overwrite=True)
        losses = history["loss"]
        k = max(1, len(losses) // 10)
        print(f"{args.objective}: {len(losses)} steps, loss {sum(losses[:k]) / k:.3f} (first {k}) -> "
              f"{sum(losses[-k:]) / k:.3f} (last {k}); saved to {out}")
    return 0
