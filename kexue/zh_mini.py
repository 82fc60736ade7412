"""kexue-zh-mini: a small Chinese RoFormer pretrained by kexue itself on the Chinese text in ``shared/data``.

No Chinese checkpoint can be downloaded here, so kexue makes one the way bert4keras's pretraining code
does (《Keras：Tensorflow的黄金标准》): a character vocabulary built from the corpus, whole-word-masking
MLM (jieba words, 15 %, 80/10/10) and :func:`kexue.train.fit` (resumable: rerun the same command to
continue after an interruption).

    L = −(1/|M|) Σ_{i∈M} log p(x_i | x̃),   M = the tokens of whole jieba words chosen with prob. 0.15

``python -m kexue.zh_mini --out DIR`` (``make zh-mini``) rebuilds it from scratch with the settings in
:data:`SETTINGS`; :func:`heldout_loss` is the number the model card reports, computed on a fixed
held-out slice with fixed masking so that it can be re-checked.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from . import datasets
from .io import write_json, write_text

SETTINGS = dict(family="roformer", hidden=256, layers=4, heads=4, intermediate=1024, maxlen=64,
                batch_size=32, lr=5e-4, weight_decay=0.01, warmup=200, seed=0, heldout=400)


def corpus() -> list[str]:
    """Every Chinese passage / sentence in shared/data, deduplicated, in a fixed order: fortunes-zh
    (quotes, Tang and Song poems), both sides of sts-b-zh and the four sim-zh sets, NER sentences."""
    from .similarity.pairs import SIM_ZH_SETS, read_pairs

    texts = datasets.chinese_text()
    for split in ("train", "valid", "test"):
        texts += [s for p in datasets.sts_zh(split) for s in (p.a, p.b)]
    for name in SIM_ZH_SETS:
        texts += [s for p in read_pairs(datasets.data_root() / "sim-zh" / f"{name}.valid.data") for s in (p.a, p.b)]
    for split in ("dev", "test"):
        texts += ["".join(chars) for chars, _ in datasets.ner_peoples_daily(split)]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def split_corpus(texts: list[str], heldout: int = SETTINGS["heldout"], seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded shuffle; the held-out passages are never trained on."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = set(order[:heldout])
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]


@torch.no_grad()
def heldout_loss(model, tokenizer, texts: list[str], maxlen: int = SETTINGS["maxlen"], seed: int = 1234,
                 batch_size: int = 32) -> float:
    """Token-level MLM cross-entropy over the masked tokens of ``texts`` with masking drawn from ``seed``."""
    from .pretraining import IGNORE, WholeWordMLM

    state = random.getstate()
    random.seed(seed)
    try:
        collate = WholeWordMLM(tokenizer, maxlen)
        batches = [collate(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    finally:
        random.setstate(state)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        logits = model(b["input_ids"], b["segment_ids"], b["attention_mask"]).logits
        labels = b["labels"].flatten()
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels,
                                                         ignore_index=IGNORE, reduction="sum"))
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def main(argv: list[str] | None = None) -> int:
    from .checkpoints import save_pretrained
    from .models import build_model
    from .optim import WarmupLinear, lambda_lr
    from .pretraining import WholeWordMLM, build_char_vocab, mlm_loss
    from .train import fit

    s = SETTINGS
    ap = argparse.ArgumentParser(prog="python -m kexue.zh_mini", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the finished model (config, weights, vocab, card)")
    ap.add_argument("--work", default="runs/zh-mini", help="run folder: vocab, resumable training state")
    ap.add_argument("--steps", type=int, default=3000, help="optimizer updates")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(s["seed"])
    random.seed(s["seed"])
    work, out = Path(args.work), Path(args.out)
    train, held = split_corpus(corpus())
    vocab = work / "vocab.txt"
    tok = build_char_vocab(train, vocab)
    cfg = dict(model_type=s["family"], vocab_size=tok.vocab_size, hidden_size=s["hidden"],
               num_hidden_layers=s["layers"], num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
               max_position_embeddings=512, type_vocab_size=2)
    model = build_model(cfg, with_mlm=True)
    data = torch.utils.data.DataLoader(train, batch_size=s["batch_size"], shuffle=True, drop_last=True,
                                       collate_fn=WholeWordMLM(tok, s["maxlen"]))
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    t0 = time.time()
    history = fit(model, mlm_loss, data, optimizer=opt, steps=args.steps,
                  scheduler=lambda_lr(opt, WarmupLinear(s["warmup"], args.steps)), clip_norm=1.0,
                  checkpoint_dir=work / "train", checkpoint_every=100, progress=not args.no_progress, seed=s["seed"])
    hours = (time.time() - t0) / 3600
    loss = heldout_loss(model, tok, held)
    save_pretrained(model.half(), out, tok)
    metrics = dict(settings=s, steps=args.steps, passages_train=len(train), passages_heldout=len(held),
                   vocab_size=tok.vocab_size, heldout_mlm_loss=round(loss, 4), train_hours_this_run=round(hours, 3),
                   final_train_loss=round(sum(history["loss"][-50:]) / max(1, len(history["loss"][-50:])), 4))
    write_json(out / "metrics.json", metrics)
    write_text(out / "README.md", model_card(metrics))
    print(f"held-out MLM loss {loss:.4f} (ppl {math.exp(loss):.1f}); saved to {out}")
    return 0


def model_card(m: dict) -> str:
    s = m["settings"]
    return f"""# kexue-zh-mini

A small Chinese RoFormer ({s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, FFN {s['intermediate']},
character vocabulary of {m['vocab_size']}) pretrained by kexue with whole-word-masking MLM.

- Data: every Chinese text in `shared/data` (fortunes-zh quotes and poems, sts-b-zh and the ATEC / BQ / LCQMC /
  PAWSX sentences, People's Daily NER sentences), deduplicated: {m['passages_train']} passages for training,
  {m['passages_heldout']} held out (seeded split, `kexue.zh_mini.split_corpus`).
- Settings: maxlen {s['maxlen']}, batch {s['batch_size']}, AdamW lr {s['lr']} (warmup {s['warmup']}, linear decay),
  weight decay {s['weight_decay']}, clip 1.0, seed {s['seed']}, {m['steps']} updates.
- Final training loss (mean of the last 50 updates): {m['final_train_loss']}.
- **Held-out MLM loss: {m['heldout_mlm_loss']}** (token cross-entropy on masked tokens, masking seed 1234;
  `kexue.zh_mini.heldout_loss`). Re-checked by `tests/test_zh_mini.py`.
- Weights stored in fp16 (`model.safetensors`); load with `kexue.pretrained.zh_mini()` or
  `build_model(checkpoint=...)`; `transformers`' `RoFormerForMaskedLM` loads the folder too.
- Reproduce from scratch: `make zh-mini` (2 CPU cores; resumable).
"""


if __name__ == "__main__":
    raise SystemExit(main())
