"""Shared plumbing for the task recipes: model + tokenizer from a checkpoint or from scratch, a char
vocabulary built from the training data, batching, and the resumable training run every recipe goes through.

Every recipe takes ``--train FILE --dev FILE`` (its own format, see :mod:`kexue.data.files`; the
shipped data by default) and ``--checkpoint MODEL`` to fine-tune a pretrained model: a folder (HF layout:
config.json, weights, vocab.txt), a hub id ``org/name[@revision]`` (:mod:`kexue.hub`) or a shipped model
(``minilm``, ``zh-mini``); without it a small model is trained from scratch on a character vocabulary
built from the recipe's own training texts. The learning rate and warm-up defaults depend on the start:
``--lr`` the recipe's own from scratch, 2e-5 from a pretrained model; ``--warmup`` 10 % / 6 % of the updates
(RoBERTa's fine-tuning ratio). Every number and path is checked while parsing, the output folder before
any data is read, and the trained model is saved into ``--out`` (:mod:`kexue.recipes.folder`).

**The run** (:func:`start_run`, :class:`Run`): training goes through :func:`kexue.train.fit` in the run
folder ``OUT/train/`` (``settings.json`` + the atomic ``state.safetensors``; the model folder carries it over
when it is saved). A run killed (``kill -9``, Ctrl-C) and started again by the same command ends with
the same model, bit for bit, as an uninterrupted one. Settings that change the result are compared before
any model is built: a difference is refused naming each one, unless ``--resume`` (continue with the new
settings: the schedule is re-planned) or ``--overwrite`` (start over); what the model's shape depends on
(the start, the vocabulary, the labels, head sizes) cannot change under ``--resume``. ``--resume`` on a
finished run that would train no further update says so and leaves ``--out`` as it is.

**Evaluation**: the recipe's dev metric (NER entity F1, accuracy, answer F1, perplexity, Spearman) is
computed on the evaluation data after every epoch (or every ``--eval-every`` updates), printed and
recorded (``metrics.json``'s ``dev_curve``, the model card). With ``--dev`` the saved model is the best
evaluation's weights (kept in the run's checkpoints, so it resumes exactly too), and ``--patience N`` stops
after N evaluations without a better score. From a pretrained model the metric is also computed before
training: a fine-tuned model that scores worse than its start is reported loudly (stderr, metrics, model
card), and ``--refuse-worse`` saves nothing then.
"""
from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from kexue.data.batching import index_batches, length_batches
from kexue.io import fingerprint, holds_model
from kexue.models import Transformer, TransformerConfig, build_model
from kexue.models.checkpoints import load_checkpoint_except
from kexue.optim.preset import adamw_preset
from kexue.recipes import args as at
from kexue.recipes import tricks
from kexue.recipes.monitoring import add_monitoring, monitoring_options
from kexue.text.tokenizer import SPECIAL_TOKENS, Tokenizer, build_vocab, pad_batch
from kexue.train.loop import STATE_FILE
from kexue.train.loop import fit as train_fit
from kexue.train.state import check_run, diff_settings, jsonable, read_progress, read_settings

SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
             max_position_embeddings=512, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
PRETRAINED_LR = 2e-5
WARMUP = {"scratch": 0.1, "pretrained": 0.06}
RUN_FOLDER = "train"


def recipe_args(description: str, out: str, epochs: int, lr: float = 1e-3, batch_size: int = 32,
                data: str = "FILE", shipped_data: bool = True, supports: Sequence[str] = (),
                why_not: dict[str, str] | None = None) -> at.ArgumentParser:
    """The options every recipe shares (``data`` describes the format of ``--train``/``--dev``;
    ``shipped_data=False``: no shipped default, ``--train`` is required), the training tricks among them
    (:mod:`kexue.recipes.tricks`; ``supports``: the optional ones the recipe implements, ``why_not``: why not the
    others)."""
    name = out.rsplit("/", 1)[-1]
    p = at.ArgumentParser(prog=f"kexue {name}", description=description)
    p.add_argument("--train", type=at.input_file, metavar="FILE", required=not shipped_data,
                   help=f"training data: {data}" + (" (default: the shipped data)" if shipped_data else ""))
    p.add_argument("--dev", type=at.input_file, metavar="FILE",
                   help="development data, same format: scored after every epoch, and the saved model is the best "
                        "epoch on it (default: " + ("the shipped evaluation split, scored the same way; the last "
                                                     "epoch is saved)" if shipped_data else "none)"))
    p.add_argument("--checkpoint", type=at.model_or_shipped, metavar="MODEL",
                   help="pretrained model to fine-tune: a folder (config.json, weights, vocab.txt), a hub id "
                        "org/name[@revision], or a shipped model: minilm, zh-mini (default: a small model from "
                        "scratch)")
    p.add_argument("--family", default="roformer", choices=["bert", "roformer", "roformer_v2"],
                   help="family of the from-scratch model (without --checkpoint)")
    p.add_argument("--out", default=out, metavar="DIR",
                   help="output folder: the trained model, metrics.json, loss.png, README.md, and train/ (the "
                        "resumable run: rerun the same command to continue it after an interruption)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out/train with changed settings (e.g. more --epochs)")
    again.add_argument("--overwrite", action="store_true", help="start over, replacing the run and model in --out")
    p.add_argument("--epochs", type=at.positive_int, default=epochs, help="passes over the training data")
    p.add_argument("--lr", type=at.positive_float, default=None,
                   help=f"peak learning rate (default: {lr:g} from scratch, {PRETRAINED_LR:g} from a pretrained "
                        "--checkpoint)")
    p.add_argument("--warmup", type=at.open_probability, default=None,
                   help=f"linear warm-up over this fraction of the updates, then linear decay (default: "
                        f"{WARMUP['scratch']:g} from scratch, {WARMUP['pretrained']:g} from a pretrained --checkpoint)")
    p.add_argument("--batch-size", type=at.positive_int, default=batch_size, help="examples per step")
    p.add_argument("--limit", type=at.positive_int, default=None, help="use only the first N train/eval examples")
    p.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation, shuffling and sampling")
    p.add_argument("--eval-every", type=at.positive_int, default=None, metavar="N",
                   help="score the evaluation data every N updates as well (default: after every epoch)")
    p.add_argument("--patience", type=at.positive_int, default=None, metavar="N",
                   help="early stopping: stop after N evaluations without a better --dev score (default: no early "
                        "stopping)")
    p.add_argument("--refuse-worse", action="store_true",
                   help="from a pretrained --checkpoint: save nothing when the fine-tuned model scores worse on the "
                        "evaluation data than the checkpoint did before training (it is reported either way)")
    p.add_argument("--checkpoint-every", type=at.positive_int, default=None, metavar="N",
                   help="write the resumable state every N updates (default: at every evaluation)")
    p.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss or gradient is not finite (counted) instead of stopping the run")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    tricks.add_options(p)
    add_monitoring(p)  # --tensorboard DIR (kexue.recipes.monitoring)
    p.set_defaults(scratch_lr=lr, trick_support=tuple(supports), trick_why_not=why_not)
    return p


def parse(p: at.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``p.parse_args(argv)``, the checks between options, and the start-dependent defaults filled in
    (``lr``, ``warmup``)."""
    args = p.parse_args(argv)
    tricks.check(p, args, args.trick_support, args.trick_why_not)
    if args.patience and not args.dev:
        p.error("--patience watches the --dev score: give --dev")
    if args.refuse_worse and not args.checkpoint:
        p.error("--refuse-worse compares with a pretrained --checkpoint's score before training: give --checkpoint")
    start = "pretrained" if args.checkpoint else "scratch"
    if args.lr is None:
        args.lr = PRETRAINED_LR if args.checkpoint else args.scratch_lr
    if args.warmup is None:
        args.warmup = WARMUP[start]
    return args


def setup(args: argparse.Namespace) -> Path:
    """Seeds and threads; ``--out`` checked writable and free (nothing is written into it yet: the model
    folder is written as one unit at the end, :func:`kexue.recipes.folder.save_task_model`): a saved model
    is refused unless ``--overwrite`` (or ``--resume``, decided by :func:`start_run`)."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out = at.check_output_dir(args.out)
    if not args.overwrite and not getattr(args, "resume", False) and holds_model(out):
        from kexue.recipes.folder import check_model_folder

        try:
            check_model_folder(out)
            what = "a trained model"
        except (ValueError, OSError) as e:
            what = f"an incomplete or damaged model folder ({e})"
        raise at.UsageError(f"--out {out} already holds {what}; pass --overwrite to replace it (or --resume to "
                            "continue its run with changed settings)")
    return out


# --- the starting model ---------------------------------------------------------------------------------

def checkpoint_folder(spec: str | Path) -> Path:
    """The folder of a ``--checkpoint``: a shipped model's by name (``minilm``, ``zh-mini``), else ``spec``
    (hub ids are already resolved to their cached folder while parsing, :func:`kexue.recipes.args.model_dir`)."""
    from kexue.models.pretrained import SHIPPED, minilm_path, zh_mini_path

    if str(spec) in SHIPPED:
        return minilm_path() if spec == "minilm" else zh_mini_path()
    return Path(spec)


def tokenizer_for(args: argparse.Namespace, texts: Sequence[str]) -> Tokenizer:
    """The checkpoint's tokenizer, or a char vocabulary of ``texts`` (saved with the model)."""
    if args.checkpoint:
        return Tokenizer.from_pretrained(checkpoint_folder(args.checkpoint))
    return Tokenizer(build_vocab(texts))  # no Chinese vocab ships: one from the data


def backbone(args: argparse.Namespace, tokenizer: Tokenizer, application: str = "encoder", with_mlm: bool = False,
             cond_dim: int | None = None, **overrides) -> Transformer:
    """``args.checkpoint``'s weights (in fp32), else a small ``args.family`` model over ``tokenizer``'s vocabulary."""
    if args.checkpoint:
        folder = checkpoint_folder(args.checkpoint)
        model = build_model(folder, application=application, with_mlm=with_mlm, cond_dim=cond_dim)
        # only parts the recipe adds may be missing: conditional-LN projections, an MLM/LM head
        load_checkpoint_except(model, folder, r"cond_|predictions|lm_head")
        return model.float()  # a checkpoint stored in fp16 (zh-mini) trains in fp32
    config = TransformerConfig.from_dict({**SMALL, **overrides, "vocab_size": tokenizer.vocab_size,
                                          "model_type": args.family})
    return build_model(config, application=application, with_mlm=with_mlm, cond_dim=cond_dim)


def model_and_tokenizer(args: argparse.Namespace, texts: Sequence[str], application: str = "encoder",
                        with_mlm: bool = False, cond_dim: int | None = None, **overrides) -> tuple[Transformer, Tokenizer]:
    """Load ``args.checkpoint`` if given, else a small ``args.family`` model on a char vocab of ``texts``."""
    tokenizer = tokenizer_for(args, texts)
    return backbone(args, tokenizer, application, with_mlm, cond_dim, **overrides), tokenizer


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


# --- the run --------------------------------------------------------------------------------------------

@dataclass
class Metric:
    """The dev metric of a recipe: ``evaluate()`` scores the model (in eval mode, no gradients) on the
    evaluation data, a dict of numbers holding ``name``; ``higher`` says which way is better."""

    name: str
    evaluate: Callable[[], dict[str, float]]
    higher: bool = True

    def better(self, value: float, than: float | None) -> bool:
        if math.isnan(value):
            return False
        if than is None or math.isnan(than):
            return True
        return value > than if self.higher else value < than


class Evaluation:
    """A :func:`kexue.train.fit` callback: the dev metric at each evaluation, printed, recorded in the history;
    the best evaluation's step and score (and, ``keep`` given, a copy of that module's weights); early stopping
    after ``patience`` evaluations without a better score. Its state travels in fit's checkpoints
    (``state_objects``), so a resumed run keeps the same best weights."""

    def __init__(self, metric: Metric, desc: str, steps: int, per_epoch: int, keep: nn.Module | None = None,
                 patience: int | None = None):
        self.metric, self.desc, self.steps, self.per_epoch = metric, desc, steps, per_epoch
        self.keep, self.patience = keep, patience
        self.best: dict[str, Any] | None = None

    def __call__(self, state) -> dict:
        scores = {k: float(v) for k, v in self.metric.evaluate().items()}
        value = scores[self.metric.name]
        better = self.metric.better(value, self.best["score"] if self.best else None)
        if better:
            self.best = {"step": state.step, "score": value}
            if self.keep is not None:
                self.best["weights"] = {k: v.detach().clone() for k, v in self.keep.state_dict().items()}
        since = sum(r["step"] > self.best["step"] for r in state.history["eval"]) + (not better) if self.best else 0
        epoch = round(state.step / self.per_epoch, 3)
        line = f"{self.desc}: epoch {epoch:g} (step {state.step}/{self.steps}): dev {self.metric.name} {value:.4f}"
        if better:
            line += " (best so far)"
        elif self.best:
            line += f" (best {self.best['score']:.4f} at step {self.best['step']})"
        if self.patience and since >= self.patience and state.step < self.steps:
            state.stop = True
            line += f"; no better score in {since} evaluations: early stop (--patience {self.patience})"
        _say(line)
        return {"epoch": epoch, **scores}

    def state_dict(self) -> dict:
        return dict(self.best) if self.best else {}

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state) if state else None


def _say(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)


def _score(module: nn.Module, metric: Metric) -> dict[str, float]:
    was = module.training
    module.eval()
    with torch.no_grad():
        scores = {k: float(v) for k, v in metric.evaluate().items()}
    module.train(was)
    return scores


class WorseThanStart(ValueError):
    """``--refuse-worse``: the fine-tuned model scores worse than the pretrained start; nothing was saved."""


@dataclass
class Trained:
    """What a run leaves: fit's ``history``, the loss per epoch, the evaluations, the saved weights' choice."""

    history: dict[str, list]
    epoch_losses: list[float]
    steps: int
    per_epoch: int
    metric: Metric | None = None
    keep: str = "last"  # "best" (with --dev) or "last"
    best: dict | None = None  # {"step", "score"} of the best evaluation
    before: dict | None = None  # the scores of the pretrained start
    notes: list[str] = field(default_factory=list)
    tricks: dict = field(default_factory=dict)  # the training tricks' values (kexue.recipes.tricks.summary)

    @property
    def losses(self) -> list[float]:
        return [float(x) for x in self.history["loss"]]

    @property
    def evals(self) -> list[dict]:
        return list(self.history.get("eval", []))

    @property
    def stopped_early(self) -> bool:
        return bool(self.evals) and self.evals[-1]["step"] < self.steps

    @property
    def after(self) -> float | None:
        """The saved weights' dev score."""
        if self.metric is None or not self.evals:
            return None
        if self.keep == "best" and self.best:
            return self.best["score"]
        return self.evals[-1][self.metric.name]

    @property
    def worse(self) -> bool:
        if self.before is None or self.after is None:
            return False
        name = self.metric.name
        return not math.isnan(self.before[name]) and (math.isnan(self.after) or
                                                      self.metric.better(self.before[name], self.after))

    def metrics(self) -> dict[str, Any]:
        """The run's part of ``metrics.json``."""
        m: dict[str, Any] = {"dev_curve": self.evals, "saved_weights": self.keep, "stopped_early": self.stopped_early,
                             "training_tricks": self.tricks}
        if self.metric is not None:
            m["dev_metric"] = self.metric.name
        if self.keep == "best" and self.best:
            m["best"] = {"step": self.best["step"], "epoch": round(self.best["step"] / self.per_epoch, 3),
                         self.metric.name: self.best["score"]}
        if self.before is not None:
            m["dev_before_training"] = self.before
            m["dev_after_training"] = {self.metric.name: self.after}
            m["worse_than_start"] = self.worse
        return m

    def card(self) -> list[str]:
        """The model card's lines about the run."""
        lines = list(self.notes)
        if self.metric is not None and self.evals:
            curve = ", ".join(f"{r['epoch']:g}: {r[self.metric.name]:.4f}" for r in self.evals)
            lines.append(f"dev {self.metric.name} by epoch: {curve}")
        if self.keep == "best" and self.best:
            lines.append(f"saved weights: the best --dev evaluation, step {self.best['step']} "
                         f"({self.metric.name} {self.best['score']:.4f})")
        else:
            lines.append("saved weights: the last step")
        if self.stopped_early:
            lines.append(f"early stopping: stopped at step {self.evals[-1]['step']} of {self.steps}")
        if self.before is not None and self.after is not None:
            name = self.metric.name
            lines.append(f"dev {name} before fine-tuning {self.before[name]:.4f}, after {self.after:.4f}"
                         + (": **WORSE than the pretrained start**" if self.worse else ""))
        return lines

    def check(self, desc: str, refuse: bool) -> None:
        """Say loudly (stderr) when the fine-tuned model is worse than its start; ``refuse``: raise instead of
        letting it be saved."""
        if not self.worse:
            return
        name = self.metric.name
        what = (f"the fine-tuned model scores worse on the evaluation data than the pretrained start: {name} "
                f"{self.before[name]:.4f} before training, {self.after:.4f} after")
        if refuse:
            raise WorseThanStart(f"{desc}: {what}; nothing saved (--refuse-worse)")
        print(f"{desc}: WARNING: {what} (recorded in metrics.json and the model card; --refuse-worse saves "
              "nothing in this case)", file=sys.stderr)


class Run:
    """A recipe's training run in ``OUT/train`` (see the module docstring); made by :func:`start_run`."""

    def __init__(self, args: argparse.Namespace, out: Path, name: str, steps: int, per_epoch: int, record: dict,
                 overwrite: bool):
        self.args, self.out, self.name, self.steps, self.per_epoch = args, out, name, steps, per_epoch
        self.record, self.overwrite = record, overwrite
        self.folder = out / RUN_FOLDER
        self.desc = f"kexue {name}"
        self.evaluation: Evaluation | None = None
        self.before: dict | None = None

    @property
    def keep_best(self) -> bool:
        return bool(self.args.dev)

    def prepare(self, metric: Metric | None, module: nn.Module, keep: nn.Module | None = None) -> None:
        """Before training: the pretrained start's score (from a ``--checkpoint``) and the evaluation callback,
        keeping the best weights of ``keep`` (default ``module``) when ``--dev`` is given; ``--recompute`` set."""
        tricks.prepare_model(self.args, module)
        if metric is None:
            return
        if self.args.checkpoint:
            self.before = _score(module, metric)
            _say(f"{self.desc}: before fine-tuning: dev {metric.name} {self.before[metric.name]:.4f}")
        self.evaluation = Evaluation(metric, self.desc, self.steps, self.per_epoch,
                                     (keep or module) if self.keep_best else None, self.args.patience)

    def fit_options(self, logits: Callable | None = None) -> dict[str, Any]:
        """The run's keyword arguments of :func:`kexue.train.fit` (run folder, resume, evaluation, progress,
        ``--adversarial``: ``logits(model, batch)`` the classifier logits VAT needs)."""
        a = self.args
        every = a.checkpoint_every or a.eval_every or self.per_epoch
        return dict(checkpoint_dir=self.folder, checkpoint_every=every, resume=a.resume, overwrite=self.overwrite,
                    callbacks=[self.evaluation] if self.evaluation else (), eval_every=a.eval_every,
                    state_objects={"evaluation": self.evaluation} if self.evaluation else None,
                    on_nonfinite="skip" if a.skip_nonfinite else "stop", progress=not a.no_progress, seed=a.seed,
                    desc=self.desc, adversarial=tricks.adversarial(a, logits), **monitoring_options(a))

    def run_fit(self, call: Callable[[], dict]) -> dict[str, list]:
        """``call()`` (the fit); a run that fails before its first checkpoint leaves no run folder behind."""
        fresh = not (self.folder / STATE_FILE).exists() or self.overwrite
        try:
            return call()
        except BaseException:
            if fresh and not (self.folder / STATE_FILE).exists():
                shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def train(self, module: nn.Module, items: Sequence, step: Callable[[list], Tensor], metric: Metric | None = None,
              length: Callable[[object], int] | None = None, weight_decay: float = 0.01,
              logits: Callable[[nn.Module, list], Tensor] | None = None) -> Trained:
        """Train ``module`` (``step(batch)`` returns the loss) with :func:`kexue.optim.adamw_preset`'s AdamW,
        ``--warmup`` then linear decay, clipping at 1, batches shuffled per epoch (length-bucketed with
        ``length``), scored by ``metric`` at every evaluation; the saved weights are left in ``module``. The
        training tricks (:mod:`kexue.recipes.tricks`) apply: param groups, recompute, adversarial training
        (``logits(model, batch)``: the classifier logits of a batch, for VAT)."""
        a = self.args
        self.prepare(metric, module)
        preset = adamw_preset(tricks.parameters(a, module, a.lr), a.lr, self.steps, warmup=a.warmup,
                              weight_decay=weight_decay, schedule="linear", clip_norm=1.0)
        data = lambda epoch: list(batches(items, a.batch_size, True, a.seed + epoch, length))  # noqa: E731
        history = self.run_fit(lambda: train_fit(module, lambda _, b: step(b), data, steps=self.steps,
                                                 **self.fit_options(logits), **preset.fit_options(self.record)))
        return self.finish(history, module)

    def finish(self, history: dict[str, list], module: nn.Module, keep: nn.Module | None = None) -> Trained:
        """After fit: the best weights into ``keep`` (default ``module``) when ``--dev`` is given; the per-epoch
        losses printed; :class:`Trained`."""
        module.eval()
        ev = self.evaluation
        best = {k: v for k, v in ev.best.items() if k != "weights"} if ev is not None and ev.best else None
        keep_best = self.keep_best and ev is not None and ev.best is not None and "weights" in ev.best
        if keep_best:
            (keep or module).load_state_dict(ev.best["weights"])
        losses = history["loss"]
        n = self.per_epoch
        epoch_losses = [sum(losses[i:i + n]) / len(losses[i:i + n]) for i in range(0, len(losses), n)]
        for e, value in enumerate(epoch_losses):
            print(f"epoch {e + 1}: loss {value:.4f}")
        notes = [f"run folder: {self.folder} (resumable: rerun the same command; settings.json records the settings)",
                 *tricks.card_lines(self.args)]
        return Trained(history, epoch_losses, self.steps, self.per_epoch, ev.metric if ev else None,
                       "best" if keep_best else "last", best, self.before, notes, tricks.summary(self.args))


def checked_card(run: Run, trained: Trained, card: dict) -> dict:
    """``card`` (of :func:`kexue.recipes.folder.save_task_model`) with the run's lines, after the worse-than-start
    check: loud on stderr, and under ``--refuse-worse`` an error, so that nothing is saved."""
    trained.check(run.desc, run.args.refuse_worse)
    return {**card, "training": trained.card()}


def read_run(folder: Path) -> tuple[dict | None, dict | None]:
    """``(settings, progress)`` of the run folder ``folder`` (None where absent), read without loading weights."""
    return read_settings(folder), read_progress(folder / STATE_FILE)


def done(progress: dict | None, steps: int, changed: bool) -> bool:
    """Whether a run at ``progress`` has no update left under a plan of ``steps`` updates (an early-stopped
    run stays stopped unless its settings changed)."""
    return progress is not None and (progress["step"] >= steps or (bool(progress.get("stopped")) and not changed))


def plan_run(folder: Path, out: Path, record: dict, *, resume: bool, overwrite: bool, desc: str,
             fixed: Sequence[str] = ("architecture",), optional: Sequence[str] = tricks.KEYS) -> bool | None:
    """Decide, before any model is built, what training into the run folder ``folder`` does with ``record`` (the
    settings, ``steps`` included): returns fit's ``overwrite`` (True: start over), or ``None`` when ``--resume``
    finds a finished run with nothing left to train and a saved model in ``out`` (said, nothing touched).
    Refuses (naming each difference) settings that differ without ``resume`` / ``overwrite``, and under
    ``resume`` the ``fixed`` ones (top-level keys: what the model's shape depends on). ``optional``: keys recorded
    only when set (the training tricks): one the old run has and ``record`` lacks is a difference too."""
    old, progress = read_run(folder)
    new = jsonable(record)
    keys = list(new) + [k for k in optional if old is not None and k in old and k not in new]
    diffs = diff_settings({k: old.get(k, "(absent)") for k in keys}, {k: new.get(k, "(absent)") for k in keys}) \
        if old is not None else []
    steps = int(record["steps"])
    if overwrite:
        if progress is not None and old is not None and not diffs and not done(progress, steps, False):
            _say(f"{desc}: {folder} holds an unfinished run of these very settings: continuing it (the same "
                 "result as starting over)")
            return False
        return True
    if resume:
        if old is None and progress is None:
            raise at.UsageError(f"--resume: {folder} holds no run to continue; run without --resume to start one")
        shape = [d for d in diffs if d.split(":", 1)[0].split(".", 1)[0] in fixed]
        if shape:
            raise at.UsageError(f"--resume continues the model trained in {folder}, whose shape cannot change: "
                                f"{'; '.join(shape)}; pass --overwrite to start over")
        if done(progress, steps, bool(diffs)):
            what = f"the changed settings ({'; '.join(diffs)}) would train nothing" if diffs else "nothing changed"
            if holds_model(out):
                print(f"{desc}: nothing to train: the run in {folder} finished at step {progress['step']} and "
                      f"{what}; {out} is left as it is (--overwrite retrains)", file=sys.stderr)
                return None
            if diffs:
                raise at.UsageError(f"--resume: the run in {folder} finished at step {progress['step']} and {what}; "
                                    "rerun it with its own settings to save its model, or pass --overwrite")
        return False
    # a difference: refused by name, pointing to --resume / --overwrite
    check_run(folder, {k: new.get(k, "(absent)") for k in keys}, partial=True)
    return False


def start_run(args: argparse.Namespace, out: Path, name: str, *, n_train: int, architecture: dict,
              settings: dict, per_epoch: int | None = None) -> Run | None:
    """The run of recipe ``name`` over ``n_train`` training examples, checked against ``OUT/train`` before
    any model is built (:func:`plan_run`). ``architecture``: what the model's shape depends on besides the
    start (``--checkpoint`` or the from-scratch family), e.g. the vocabulary and labels; ``settings``: the
    recipe's other settings that change the result (data fingerprints, maxlen, loss weights). ``None``:
    nothing to do (``--resume`` on a finished run). ``per_epoch``: updates per epoch when the recipe's batches
    are not ``ceil(n_train / batch_size)`` (e.g. a small remainder merged into the batch before it)."""
    per_epoch = per_epoch or max(1, -(-n_train // args.batch_size))
    given = getattr(args, "steps", None)  # --steps, where a recipe has it, overrides --epochs
    steps = given or max(1, args.epochs * per_epoch)
    start = str(args.checkpoint) if args.checkpoint else f"{args.family} from scratch"
    record = {"recipe": name, "architecture": {"start": start, **architecture},
              "epochs": None if given else args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup, "seed": args.seed,
              "eval_every": args.eval_every, "saved_weights": "best on --dev" if args.dev else "last",
              "patience": args.patience, **tricks.record(args), **settings}
    overwrite = plan_run(out / RUN_FOLDER, out, {**record, "steps": steps}, resume=args.resume,
                         overwrite=args.overwrite, desc=f"kexue {name}")
    if overwrite is None:
        return None
    return Run(args, out, name, steps, per_epoch, record, overwrite)


def vocabulary(tokenizer: Tokenizer) -> dict:
    """A vocabulary as a run setting: its size and fingerprint."""
    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    return {"tokens": len(tokens), "fingerprint": fingerprint(tokens)}


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def command(argv: Sequence[str] | None, name: str) -> str:
    """The command line that trained a model, for its model card."""
    return " ".join(["kexue", name, *(argv if argv is not None else [])])


__all__ = ["Metric", "PRETRAINED_LR", "Run", "SPECIAL_TOKENS", "SMALL", "Timer", "Trained", "WARMUP", "WorseThanStart",
           "backbone", "batches", "char_ids", "checked_card", "checkpoint_folder", "command", "model_and_tokenizer",
           "pad", "parse", "plan_run", "recipe_args", "setup", "start_run", "tokenizer_for", "vocabulary"]
