"""kexue-zh-mini: a small Chinese RoFormer pretrained by kexue itself on the Chinese text in ``shared/data``.

No Chinese checkpoint can be downloaded here, so kexue makes one the way bert4keras's pretraining code
does (《Keras：Tensorflow的黄金标准》): a character vocabulary built from the corpus, whole-word-masking
MLM (jieba words, 15 %, 80/10/10) and :func:`kexue.train.fit` (resumable: rerun the same command to
continue after an interruption).

    L = −(1/|M|) Σ_{i∈M} log p(x_i | x̃),   M = the tokens of whole jieba words chosen with prob. 0.15

``kexue zh-mini --out DIR`` (``make zh-mini``, :mod:`kexue.recipes.zh_mini`) rebuilds it from scratch with the settings in
:data:`SETTINGS`; :func:`heldout_loss` is the number the model card reports, computed on a fixed
held-out slice with fixed masking so that it can be re-checked.
"""
from __future__ import annotations

import random

import torch

from kexue.data import shipped as datasets

SETTINGS = dict(family="roformer", hidden=256, layers=4, heads=4, intermediate=1024, maxlen=64,
                batch_size=32, lr=5e-4, weight_decay=0.01, warmup=200, seed=0, heldout=400)


def corpus() -> list[str]:
    """Every Chinese passage / sentence in shared/data, deduplicated, in a fixed order: fortunes-zh
    (quotes, Tang and Song poems), both sides of sts-b-zh and the four sim-zh sets, NER sentences."""
    from kexue.data.pairs import SIM_ZH_SETS, read_pairs

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
    from kexue.data.batching import index_batches
    from kexue.losses.language_model import IGNORE, masked_lm_loss
    from kexue.pretraining.objectives import WholeWordMLM

    state = random.getstate()
    random.seed(seed)
    try:
        collate = WholeWordMLM(tokenizer, maxlen)
        batches = [collate([texts[i] for i in b]) for b in index_batches(len(texts), batch_size, shuffle=False)]
    finally:
        random.setstate(state)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        logits = model(b["input_ids"], b["segment_ids"], b["attention_mask"]).logits
        total += float(masked_lm_loss(logits, b["labels"], reduction="sum"))
        count += int((b["labels"] != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)

