"""Class-conditional poem generation with Conditional Layer Normalization.

《基于Conditional Layer Normalization的条件文本生成》: a class embedding c enters every LayerNorm,
γ(c) = γ + W_γ c, β(c) = β + W_β c (W zero-initialised), so one causal LM writes in the style of the
chosen class. ``kexue poem`` trains on fortunes-zh Tang poems vs Song ci (``--by poet``: the author),
then samples poems per class. Held-out score: per-token perplexity under the true class, and the
*conditional accuracy* — how often a held-out poem is most likely under its own class, which is
above chance only if the condition is actually used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classify import poem_data, stratified_split
from .common import Timer, batches, fit, model_and_tokenizer, pad, recipe_args, setup, write_metrics
from ..generation import decoding_state
from .sampling import DecodeView, sample


class ConditionalLM(nn.Module):
    def __init__(self, lm: nn.Module, n_classes: int, cond_dim: int):
        super().__init__()
        self.lm = lm
        self.classes = nn.Embedding(n_classes, cond_dim)

    def forward(self, input_ids, segment_ids=None, attention_mask=None, cond=None, label: Tensor | None = None):
        if label is not None:
            cond = self.classes(label)
        return self.lm(input_ids, segment_ids, attention_mask, cond=cond)


def token_nll(model: ConditionalLM, batch: dict[str, Tensor], label: Tensor) -> Tensor:
    """Summed next-token NLL per sequence ``[B]`` (padding excluded)."""
    logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], label=label).logits
    target = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none")
    return nll.sum(1)


def main(argv: list[str] | None = None) -> int:
    p = recipe_args("Class-conditional poem generation with Conditional LayerNorm (fortunes-zh)",
                    out="runs/poem", epochs=10, lr=2e-3, batch_size=16)
    p.add_argument("--by", choices=["dynasty", "poet"], default="dynasty", help="the class of a poem")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--cond-dim", type=int, default=64)
    p.add_argument("--samples", type=int, default=2, help="poems generated per class")
    p.add_argument("--top-k", type=int, default=8)
    args = p.parse_args(argv)
    out = setup(args)
    timer = Timer()
    train, test = stratified_split(poem_data(args.by), 0.1, args.seed)
    if args.limit:
        train, test = train[: args.limit], test[: max(2, args.limit // 5)]
    labels = sorted({lab for _, lab in train})
    index = {lab: i for i, lab in enumerate(labels)}
    lm, tokenizer = model_and_tokenizer(args, [t for t, _ in train], out, application="lm", with_mlm=True,
                                        cond_dim=args.cond_dim)
    model = ConditionalLM(lm, len(labels), args.cond_dim)

    def tensors(chunk):
        return tokenizer.encode_batch([t for t, _ in chunk], maxlen=args.maxlen), \
            torch.tensor([index.get(lab, 0) for _, lab in chunk])

    def step(chunk):
        batch, label = tensors(chunk)
        return token_nll(model, batch, label).sum() / (batch["attention_mask"][:, 1:].sum())

    history = fit(model, train, step, args.epochs, args.lr, args.batch_size, args.seed, not args.no_progress,
                  length=lambda r: len(r[0]))
    test = [(t, lab) for t, lab in test if lab in index]
    nll_true = n_tokens = 0
    hits, seen = [0] * len(labels), [0] * len(labels)
    with torch.no_grad():
        for chunk in batches(test, 32):
            batch, label = tensors(chunk)
            per_class = torch.stack([token_nll(model, batch, torch.full_like(label, c)) for c in range(len(labels))], 1)
            nll_true += float(per_class.gather(1, label[:, None]).sum())
            n_tokens += int(batch["attention_mask"][:, 1:].sum())
            for c, ok in zip(label.tolist(), (per_class.argmin(1) == label).tolist()):
                hits[c], seen[c] = hits[c] + ok, seen[c] + 1
    gen = torch.Generator().manual_seed(args.seed)
    banned = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id]
    samples = {}
    for lab in labels[:8]:
        cond = model.classes(torch.full((args.samples,), index[lab]))
        start = torch.full((args.samples, 1), tokenizer.cls_id)
        state = decoding_state(DecodeView(model.lm, cond, banned), start)
        rows = sample(state, args.maxlen - 2, tokenizer.sep_id, min_new_tokens=8, top_k=args.top_k, generator=gen)
        samples[lab] = [tokenizer.decode(r) for r in rows]
    metrics = {"task": "poem", "data": f"fortunes-zh tang300+song100 by {args.by}", "labels": labels,
               "n_train": len(train), "n_eval": len(test), "checkpoint": args.checkpoint, "epochs": args.epochs,
               "loss": history, "eval_perplexity": math.exp(nll_true / max(1, n_tokens)),
               "conditional_accuracy": sum(hits) / max(1, len(test)),
               # mean over classes of per-class accuracy: immune to the Tang-heavy class balance
               "conditional_balanced_accuracy": sum(h / n for h, n in zip(hits, seen) if n) / max(1, sum(map(bool, seen))),
               "chance": 1 / len(labels),
               "samples": samples, "decoder": f"kexue.generation top-{args.top_k} sampling",
               "seconds": timer.seconds()}
    write_metrics(out, metrics)
    return 0
