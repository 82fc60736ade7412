"""``kexue zh-mini`` (``make zh-mini``): rebuild kexue-zh-mini from scratch, the small Chinese RoFormer of
:mod:`kexue.pretraining.zh_mini`, with the settings in its :data:`~kexue.pretraining.zh_mini.SETTINGS`
(resumable: rerun the same command to continue after an interruption)."""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from kexue.io import folder_info
from kexue.models import build_model
from kexue.optim import adamw_preset
from kexue.recipes import args as at
from kexue.recipes.common import plan_run
from kexue.recipes.folder import save_model_folder
from kexue.pretraining.objectives import WholeWordMLM, build_char_vocab, mlm_loss
from kexue.pretraining.zh_mini import SETTINGS, corpus, heldout_loss, split_corpus
from kexue.train import fit


def main(argv: list[str] | None = None) -> int:
    s = SETTINGS
    ap = argparse.ArgumentParser(prog="kexue zh-mini", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the finished model (config, weights, vocab, card)")
    ap.add_argument("--work", default="runs/zh-mini", help="run folder: vocab, resumable training state")
    ap.add_argument("--steps", type=at.positive_int, default=3000, help="optimizer updates")
    ap.add_argument("--checkpoint-every", type=at.positive_int, default=100, help="updates between checkpoints")
    ap.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    at.run_folder_args(ap, where="--work")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(s["seed"])
    random.seed(s["seed"])
    work, out = Path(args.work), Path(args.out)
    overwrite = plan_run(work / "train", out, {"steps": args.steps}, resume=args.resume, overwrite=args.overwrite,
                         desc="kexue zh-mini")
    if overwrite is None:  # --resume on a finished run with nothing left to train
        return 0
    train, held = split_corpus(corpus())
    vocab = work / "vocab.txt"
    tok = build_char_vocab(train, vocab)
    cfg = dict(model_type=s["family"], vocab_size=tok.vocab_size, hidden_size=s["hidden"],
               num_hidden_layers=s["layers"], num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
               max_position_embeddings=512, type_vocab_size=2)
    model = build_model(cfg, with_mlm=True)
    data = torch.utils.data.DataLoader(train, batch_size=s["batch_size"], shuffle=True, drop_last=True,
                                       collate_fn=WholeWordMLM(tok, s["maxlen"]))
    preset = adamw_preset(model.parameters(), s["lr"], args.steps, warmup=s["warmup"], weight_decay=s["weight_decay"],
                          schedule="linear", clip_norm=1.0)
    t0 = time.time()
    history = fit(model, mlm_loss, data, steps=args.steps, checkpoint_dir=work / "train", checkpoint_every=args.checkpoint_every,
                  progress=not args.no_progress, seed=s["seed"], resume=args.resume, overwrite=overwrite,
                  **preset.fit_options())
    hours = (time.time() - t0) / 3600
    loss = heldout_loss(model, tok, held)
    metrics = dict(settings=s, steps=args.steps, passages_train=len(train), passages_heldout=len(held),
                   vocab_size=tok.vocab_size, heldout_mlm_loss=round(loss, 4), train_hours_this_run=round(hours, 3),
                   final_train_loss=round(sum(history["loss"][-50:]) / max(1, len(history["loss"][-50:])), 4))
    save_model_folder(out, folder_info("encoder", pooling="mean", post_processing={"normalize": {}}), backbone=model.half(), tokenizer=tok,
                      files={"metrics.json": metrics, "README.md": model_card(metrics)})  # one unit, manifest last
    print(f"held-out MLM loss {loss:.4f} (ppl {math.exp(loss):.1f}); saved to {out}")
    return 0



def model_card(m: dict) -> str:
    s = m["settings"]
    return f"""# kexue-zh-mini

A small Chinese RoFormer ({s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, FFN {s['intermediate']},
character vocabulary of {m['vocab_size']}) pretrained by kexue with whole-word-masking MLM.

- Data: every Chinese text in `shared/data` (fortunes-zh quotes and poems, sts-b-zh and the ATEC / BQ / LCQMC /
  PAWSX sentences, People's Daily NER sentences), deduplicated: {m['passages_train']} passages for training,
  {m['passages_heldout']} held out (seeded split, `kexue.pretraining.zh_mini.split_corpus`).
- Settings: maxlen {s['maxlen']}, batch {s['batch_size']}, AdamW lr {s['lr']} (warmup {s['warmup']}, linear decay),
  weight decay {s['weight_decay']}, clip 1.0, seed {s['seed']}, {m['steps']} updates.
- Final training loss (mean of the last 50 updates): {m['final_train_loss']}.
- **Held-out MLM loss: {m['heldout_mlm_loss']}** (token cross-entropy on masked tokens, masking seed 1234;
  `kexue.pretraining.zh_mini.heldout_loss`). Re-checked by `tests/models/test_zh_mini.py`.
- Weights stored in fp16 (`model.safetensors`); load with `kexue.models.pretrained.zh_mini()` or
  `build_model(checkpoint=...)`; `transformers`' `RoFormerForMaskedLM` loads the folder too.
- Reproduce from scratch: `make zh-mini` (2 CPU cores; resumable).
"""
