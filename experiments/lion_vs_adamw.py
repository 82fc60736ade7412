"""Lion vs AdamW on a small Chinese MLM ("Google新搜出的优化器Lion": Lion wants a 3-10x smaller
learning rate than AdamW, and a correspondingly larger weight decay, keeping lr*wd fixed).

Same model init, same batches and masks for every run; the held-out MLM loss uses one fixed
masking of held-out passages. Prints (and writes experiments/lion_vs_adamw.md) the table as it comes out.

    python experiments/lion_vs_adamw.py [--steps 300]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kexue.data.shipped import chinese_text  # noqa: E402
from kexue.models import build_model  # noqa: E402
from kexue.optim import Lion, WarmupLinear, lambda_lr  # noqa: E402
from kexue.pretraining.objectives import WholeWordMLM, mlm_loss  # noqa: E402
from kexue.text.tokenizer import Tokenizer, build_vocab  # noqa: E402
from kexue.train.loop import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = [t.replace("\n", "") for t in chinese_text()]
    random.Random(0).shuffle(texts)
    held, train = texts[:256], texts[256:]
    tok = Tokenizer(build_vocab(train, min_count=3))
    # char-level masking keeps the experiment light (whole-word masking is exercised by `kexue pretrain`)
    collate = WholeWordMLM(tok, maxlen=64, words=list)
    random.seed(123)
    held_batches = [collate(held[i:i + 64]) for i in range(0, len(held), 64)]
    cfg = dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=512, max_position_embeddings=64, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
    base_lr, base_wd = 1e-3, 0.01
    runs = [("AdamW", torch.optim.AdamW, base_lr, base_wd), ("Lion", Lion, base_lr, base_wd),
            ("Lion", Lion, base_lr / 3, base_wd * 3), ("Lion", Lion, base_lr / 10, base_wd * 10)]
    rows = []
    for name, cls, lr, wd in runs:
        torch.manual_seed(0)
        model = build_model(cfg, with_mlm=True)
        data = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                                           drop_last=True)
        opt = cls(model.parameters(), lr=lr, weight_decay=wd)
        t0 = time.perf_counter()
        hist = fit(model, mlm_loss, data, optimizer=opt, steps=args.steps,
                   scheduler=lambda_lr(opt, WarmupLinear(args.steps // 10, args.steps)), clip_norm=1.0,
                   progress=False, seed=0)
        model.eval()
        with torch.no_grad():
            held_loss = sum(mlm_loss(model, b).item() for b in held_batches) / len(held_batches)
        k = max(1, args.steps // 10)
        rows.append((name, lr, wd, sum(hist["loss"][-k:]) / k, held_loss, time.perf_counter() - t0))
        print(f"{name:<6} lr={lr:.2e} wd={wd:.2f}: train {rows[-1][3]:.3f}, held-out {held_loss:.3f} "
              f"({rows[-1][5]:.0f}s)", flush=True)
    lines = [f"MLM on kexue.data.shipped.chinese_text ({len(train)} train / {len(held)} held-out passages), "
             f"BERT 2x128, char vocab {tok.vocab_size}, {args.steps} steps x batch {args.batch_size}, "
             "warmup+linear decay, clip 1.0", "",
             "| optimizer | lr | weight decay | train loss (last 10%) | held-out MLM loss | time |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {lr:.2e} | {wd:.2f} | {tr:.3f} | {he:.3f} | {t:.0f}s |" for n, lr, wd, tr, he, t in rows]
    table = "\n".join(lines)
    print("\n" + table)
    (ROOT / "experiments" / "lion_vs_adamw.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
