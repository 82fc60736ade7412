"""Shared plumbing for the task recipes: model + tokenizer from a checkpoint or from scratch,
a char vocabulary built from the training data, batching, training through :func:`kexue.train.fit`, metrics JSON.

Every recipe takes ``--train FILE --dev FILE`` (its own format, see :mod:`kexue.data.files`; the
shipped data by default) and ``--checkpoint DIR`` (HF layout: config.json, weights, vocab.txt) to
fine-tune a pretrained model; without it a small model is trained from scratch on a character
vocabulary built from the recipe's own training texts (no Chinese checkpoint ships offline).
Every number and path is checked while parsing, the output folder before any data is read, and
the trained model is saved into ``--out`` (:mod:`kexue.recipes.folder`) for ``kexue.load``.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from kexue.data.batching import index_batches, length_batches
from kexue.recipes import args as at
from kexue.models.checkpoints import load_checkpoint_except
from kexue.io import holds_model
from kexue.models import Transformer, TransformerConfig, build_model
from kexue.optim.preset import adamw_preset
from kexue.text.tokenizer import SPECIAL_TOKENS, Tokenizer, build_vocab, pad_batch
from kexue.train.loop import fit as train_fit

SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
             max_position_embeddings=512, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def recipe_args(description: str, out: str, epochs: int, lr: float = 1e-3, batch_size: int = 32,
                data: str = "FILE") -> at.ArgumentParser:
    """The options every recipe shares (``data`` describes the format of ``--train``/``--dev``)."""
    name = out.rsplit("/", 1)[-1]
    p = at.ArgumentParser(prog=f"kexue {name}", description=description)
    p.add_argument("--train", type=at.input_file, metavar="FILE", help=f"training data: {data} (default: the shipped data)")
    p.add_argument("--dev", type=at.input_file, metavar="FILE", help="evaluation data, same format (default: the shipped split)")
    p.add_argument("--checkpoint", type=at.model_dir, metavar="DIR",
                   help="pretrained HF-layout folder (config.json, weights, vocab.txt) (default: a small model from scratch)")
    p.add_argument("--family", default="roformer", choices=["bert", "roformer", "roformer_v2"],
                   help="family of the from-scratch model (without --checkpoint)")
    p.add_argument("--out", default=out, metavar="DIR", help="output folder: the trained model, metrics.json, loss.png, README.md")
    p.add_argument("--overwrite", action="store_true", help="replace a model already saved in --out")
    p.add_argument("--epochs", type=at.positive_int, default=epochs, help="passes over the training data")
    p.add_argument("--lr", type=at.positive_float, default=lr, help="peak learning rate (~2e-5 with a pretrained checkpoint)")
    p.add_argument("--batch-size", type=at.positive_int, default=batch_size, help="examples per step")
    p.add_argument("--limit", type=at.positive_int, default=None, help="use only the first N train/eval examples")
    p.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation, shuffling and sampling")
    p.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss or gradient is not finite (counted) instead of stopping the run")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def setup(args: argparse.Namespace) -> Path:
    """Seeds and threads; ``--out`` checked writable and free (nothing is written into it yet: the model
    folder is written as one unit at the end, :func:`kexue.recipes.folder.save_task_model`)."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out = at.check_output_dir(args.out)
    if not args.overwrite and holds_model(out):
        from kexue.recipes.folder import check_model_folder

        try:
            check_model_folder(out)
            what = "a trained model"
        except (ValueError, OSError) as e:
            what = f"an incomplete or damaged model folder ({e})"
        raise at.UsageError(f"--out {out} already holds {what}; pass --overwrite to replace it")
    return out


def model_and_tokenizer(args: argparse.Namespace, texts: Sequence[str], application: str = "encoder",
                        with_mlm: bool = False, cond_dim: int | None = None, **overrides) -> tuple[Transformer, Tokenizer]:
    """Load ``args.checkpoint`` if given, else a small ``args.family`` model on a char vocab of ``texts``."""
    if args.checkpoint:
        model = build_model(args.checkpoint, application=application, with_mlm=with_mlm, cond_dim=cond_dim)
        # only parts the recipe adds may be missing: conditional-LN projections, an MLM/LM head
        load_checkpoint_except(model, args.checkpoint, r"cond_|predictions|lm_head")
        return model, Tokenizer.from_pretrained(args.checkpoint)
    tokenizer = Tokenizer(build_vocab(texts))  # no Chinese vocab ships: one from the data (saved with the model)
    config = TransformerConfig.from_dict({**SMALL, **overrides, "vocab_size": tokenizer.vocab_size,
                                          "model_type": args.family})
    return build_model(config, application=application, with_mlm=with_mlm, cond_dim=cond_dim), tokenizer


def char_ids(tokenizer: Tokenizer, chars: Sequence[str]) -> list[int]:
    """One id per character (keeps NER tags aligned; digits/Latin never merge into word pieces)."""
    ids = []
    for ch in chars:
        key = ch.lower() if tokenizer.lowercase else ch
        ids.append(tokenizer.vocab.get(key, tokenizer.unk_id) if ch.strip() else tokenizer.unk_id)
    return ids


def batches(items: Sequence, batch_size: int, shuffle: bool = False, seed: int = 0,
            length: Callable[[object], int] | None = None) -> Iterator[list]:
    """The items in mini-batches (:mod:`kexue.data.batching`): in order, or shuffled with ``seed``; with
    ``length``, items of similar length share a batch (less padding): shuffled, sorted within windows of 50
    batches, the batches shuffled; unshuffled, buckets of increasing length."""
    rng = {"seed": seed} if shuffle else {}
    if length is not None:
        chunks = length_batches([length(x) for x in items], batch_size, shuffle=shuffle, **rng)
    else:
        chunks = index_batches(len(items), batch_size, shuffle=shuffle, **rng)
    for chunk in chunks:
        yield [items[j] for j in chunk]


def pad(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int = 0) -> dict[str, Tensor]:
    return pad_batch(encoded, pad_id)


def fit(module: nn.Module, train: Sequence, step: Callable[[list], Tensor], epochs: int, lr: float,
        batch_size: int, seed: int = 0, progress: bool = True, skip_nonfinite: bool = False,
        weight_decay: float = 0.01, length: Callable[[object], int] | None = None) -> tuple[list[float], list[float]]:
    """:func:`kexue.train.fit` with :func:`kexue.optim.adamw_preset`'s defaults: AdamW, 10 % linear warm-up then
    linear decay, clipping at 1;
    ``step(batch)`` returns the loss; ``length(item)`` enables length-bucketed batches; a non-finite
    loss or gradient stops the run (``skip_nonfinite``: the step is skipped and counted).
    Returns the mean loss of each epoch and the loss of every step."""
    per_epoch = (len(train) + batch_size - 1) // batch_size
    total = max(1, epochs * per_epoch)
    preset = adamw_preset([p for p in module.parameters() if p.requires_grad], lr, total, warmup=0.1,
                          weight_decay=weight_decay, schedule="linear", clip_norm=1.0)
    history = train_fit(module, lambda _, b: step(b), lambda epoch: list(batches(train, batch_size, True, seed + epoch, length)),
                        steps=total, progress=progress, seed=seed, on_nonfinite="skip" if skip_nonfinite else "stop",
                        **preset.fit_options())
    losses = history["loss"]
    per_epoch_loss = [sum(losses[i:i + per_epoch]) / len(losses[i:i + per_epoch]) for i in range(0, len(losses), per_epoch)]
    for e, value in enumerate(per_epoch_loss):
        print(f"epoch {e + 1}: loss {value:.4f}")
    module.eval()
    return per_epoch_loss, [float(x) for x in losses]


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def command(argv: Sequence[str] | None, name: str) -> str:
    """The command line that trained a model, for its model card."""
    return " ".join(["kexue", name, *(argv if argv is not None else [])])


__all__ = ["SPECIAL_TOKENS", "SMALL", "Timer", "batches", "char_ids", "command", "fit", "model_and_tokenizer",
           "pad", "recipe_args", "setup"]
