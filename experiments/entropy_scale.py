"""Length extrapolation with the entropy-invariant scale (《从熵不变性看Attention的Scale操作》).

    Attention-O: softmax(q·k / √d)          Attention-E: softmax(log_N(n) · q·k / √d),  N = 64 the training length

A character-level GPT with RoPE is trained at length 64 on the Chinese passages of fortunes-zh
(`../shared/data/fortunes-zh`), once with each attention, on the same batches. Both are evaluated on
held-out text at n = 64 … 1024 tokens: perplexity, next-character accuracy, and the entropy of the
attention rows of the last 32 queries (each sees about n keys), read with ``kexue.tools.capture``.
The post trained a RoFormer MLM (accuracy, its table is printed beside ours); this is a causal LM, so
the numbers are not comparable one to one, only the trend is. In a causal model query i sees
n = i + 1 keys, so Attention-E scales each row by log_64(i + 1).

    PYTHONPATH=. python experiments/entropy_scale.py      # ~3-4 min on one CPU thread

Writes experiments/results/entropy_scale.{md,json,png} and entropy_scale_attention.png.
"""
from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

from _report import pyplot, save_figure, write_report

import torch
import torch.nn.functional as F

import kexue
from kexue.tools.capture import plot_attention
from kexue.data.shipped import chinese_text
from kexue.models import build_model

OUT = Path(__file__).resolve().parent / "results"
LENGTHS = (64, 128, 256, 512, 1024)
POST = {"Attention-O": (43.27, 36.53, 23.02, 15.12, 11.54), "Attention-E": (43.11, 41.17, 34.04, 20.15, 13.58)}


def corpus(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Character ids of the passages (newline-joined); the last 8 % of passages are held out."""
    texts = chinese_text()
    cut = int(len(texts) * 0.92)
    train_text, test_text = "\n".join(texts[:cut]), "\n".join(texts[cut:])
    chars = ["<unk>"] + [c for c, _ in Counter(train_text).most_common(vocab_size - 1)]
    index = {c: i for i, c in enumerate(chars)}
    encode = lambda s: torch.tensor([index.get(c, 0) for c in s])  # noqa: E731
    return encode(train_text), encode(test_text), chars


def make_model(vocab: int, entropy: bool, seed: int):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
               max_position_embeddings=64, type_vocab_size=0, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, model_type="gpt", rope=True)
    model = build_model(cfg)
    if entropy:
        for layer in model.layers:  # the log n / log N factor (config key entropy_train_len)
            layer.attn.entropy_train_len = 64
    return model


def train(model, data: torch.Tensor, steps: int, batch: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (1 - s / steps) + 0.05)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 65, (batch,), generator=g)
        x = torch.stack([data[s:s + 65] for s in starts.tolist()])
        logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


@torch.no_grad()
def evaluate(model, data: torch.Tensor, n: int, tokens: int) -> dict:
    """Perplexity and accuracy over held-out windows of n tokens, attention entropy of the last 32 queries."""
    model.eval()
    windows = data[: (tokens // n) * (n + 1)].view(-1, n + 1)[:, :]
    nll, hits, count, entropy = 0.0, 0, 0, []
    for w in windows:
        x = w[None]
        with kexue.tools.capture(model, "layers.*.attn.probs") as got:
            logits = model(x[:, :-1]).logits
        nll += F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
        hits += (logits[0].argmax(-1) == x[0, 1:]).sum().item()
        count += n
        for p in got.values():
            rows = p[0, :, -32:]  # [H, 32, n]
            entropy.append(-(rows * rows.clamp_min(1e-30).log()).sum(-1).mean().item())
    return {"ppl": math.exp(nll / count), "acc": hits / count, "entropy": sum(entropy) / len(entropy),
            "last_probs": got}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=3000)
    ap.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens per length")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    train_ids, test_ids, chars = corpus(args.vocab)
    print(f"fortunes-zh: {len(train_ids)} training characters, {len(test_ids)} held out, vocab {len(chars)}")
    results = {}
    for name, entropy in (("Attention-O", False), ("Attention-E", True)):
        model = make_model(len(chars), entropy, args.seed)
        loss = train(model, train_ids, args.steps, args.batch, args.seed)
        results[name] = {}
        for n in LENGTHS:
            r = evaluate(model, test_ids, n, args.eval_tokens)
            if n == 256:
                plot_attention(r["last_probs"]["layers.1.attn.probs"][0, :, -64:, -64:],
                               OUT / f"entropy_scale_attention_{name[-1]}.png",
                               title=f"{name}, n=256, layer 1: last 64 queries × last 64 keys")
            results[name][n] = {k: r[k] for k in ("ppl", "acc", "entropy")}
            print(f"{name} n={n:5d}  ppl {r['ppl']:8.2f}  acc {r['acc']:.4f}  entropy {r['entropy']:.3f}", flush=True)
        print(f"{name}: final training loss {loss:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    lines = ["# Entropy-invariant attention scale: train at 64, evaluate at 64…1024", "",
             f"Character GPT with RoPE (2 layers, hidden 128, 4 heads), {args.steps} steps × {args.batch} × 64 "
             f"characters of fortunes-zh; held-out text, {args.eval_tokens} tokens per length.", "",
             "| n | " + " | ".join(f"{n}" for n in LENGTHS) + " |", "|---" * (len(LENGTHS) + 1) + "|"]
    for metric, fmt in (("ppl", "{:.1f}"), ("acc", "{:.3f}"), ("entropy", "{:.2f}")):
        for name in results:
            lines.append(f"| kexue {name} {metric} | " + " | ".join(fmt.format(results[name][n][metric])
                                                                     for n in LENGTHS) + " |")
    for name, accs in POST.items():
        lines.append(f"| post {name} MLM acc % (RoFormer) | " + " | ".join(f"{a}" for a in accs) + " |")
    lines += ["", "entropy: mean over layers and heads of -Σ a log a for the last 32 query rows "
                  f"(log n for uniform attention: {', '.join(f'{math.log(n):.2f}' for n in LENGTHS)}).",
              "", f"{time.time() - t0:.0f} s wall, {time.process_time():.0f} s CPU (one thread)."]
    write_report(OUT, "entropy_scale", lines, {"args": vars(args), "results": results, "post_mlm_acc": POST})
    plot(results, OUT / "entropy_scale.png")
    return 0


def plot(results: dict, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in results.items():
        axes[0].plot(LENGTHS, [r[n]["ppl"] for n in LENGTHS], marker="o", label=name)
        axes[1].plot(LENGTHS, [r[n]["entropy"] for n in LENGTHS], marker="o", label=name)
    axes[1].plot(LENGTHS, [math.log(n) for n in LENGTHS], "k:", label="log n (uniform)")
    for ax, title in zip(axes, ("held-out perplexity", "attention entropy (last 32 queries)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length n (trained at 64)")
        ax.set_title(title)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
