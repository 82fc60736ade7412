r"""Pretraining objectives on a folder of plain text (bert4keras ``pretraining/``; "Keras:Tensorflow的黄金标准").

* **MLM with whole-word masking**: :math:`\mathcal{L} = -\sum_{i\in M}\log p(x_i \mid \tilde x)`, where the
  masked set :math:`M` picks whole (jieba) words with probability ``mask_rate`` and replaces each
  chosen word's tokens by ``[MASK]`` (80%), a random token (10%) or itself (10%).
* **UniLM seq2seq**: :math:`\mathcal{L} = -\sum_{t\in\text{target}}\log p(y_t \mid x, y_{<t})` with the
  UniLM mask (source bidirectional, target causal) over ``[CLS] source [SEP] target [SEP]``.

``kexue pretrain --data DIR --objective mlm|unilm --out OUT`` runs either with :func:`kexue.train.fit`
(resumable; ``torchrun --nproc_per_node N -m kexue.cli pretrain ...`` for several processes).
No Chinese vocabulary ships offline, so ``--vocab`` defaults to a character vocabulary built from
the corpus (:func:`build_char_vocab`).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from kexue.data.files import DataError, read_lines
from kexue.io import write_text
from kexue.losses.language_model import IGNORE, masked_lm_loss, next_token_loss, next_token_positions
from kexue.text.tokenizer import Tokenizer, build_vocab, jieba_words


def read_corpus(folder: str | Path) -> list[str]:
    """Every non-empty line of every ``*.txt`` under ``folder`` (one passage per line); a file that is not UTF-8
    is refused naming it and the line (:func:`kexue.data.files.read_lines`), a folder without text naming it."""
    files = sorted(Path(folder).rglob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt files under {folder}")
    texts = [line.strip() for f in files for line in read_lines(f) if line.strip()]
    if not texts:
        raise DataError(f"{folder}: no text (its {len(files)} *.txt file{'s hold' if len(files) > 1 else ' holds'} "
                        "only blank lines)")
    return texts


def build_char_vocab(texts: Iterable[str], path: str | Path, min_count: int = 1,
                     max_size: int | None = None) -> Tokenizer:
    """Write a character-level BERT ``vocab.txt`` for ``texts`` and return its tokenizer."""
    write_text(path, "\n".join(build_vocab(texts, min_count=min_count, max_size=max_size)) + "\n")
    return Tokenizer(path)


class WholeWordMLM:
    """Collate function: texts -> ``input_ids, segment_ids, attention_mask, labels`` (``-100`` = not
    predicted). Words come from ``words(text)`` (jieba by default); the tokenisation of each text
    is cached, the masking is redrawn (from Python's ``random``) every time a text is batched."""

    def __init__(self, tokenizer: Tokenizer, maxlen: int = 128, mask_rate: float = 0.15,
                 words: Callable[[str], Sequence[str]] = jieba_words):
        self.tok, self.maxlen, self.mask_rate, self.words = tokenizer, maxlen, mask_rate, words
        self._cache: dict[str, list[list[int]]] = {}

    def word_ids(self, text: str) -> list[list[int]]:
        if text not in self._cache:
            out, n = [], 0
            for w in self.words(text):
                ids = self.tok.encode(w)[0][1:-1] if w.strip() else []
                if not ids:
                    continue
                if n + len(ids) > self.maxlen - 2:
                    break
                out.append(ids)
                n += len(ids)
            self._cache[text] = out
        return self._cache[text]

    def _mask_word(self, word: list[int], ids: list[int], lab: list[int]) -> None:
        r = random.random()  # one decision per word: the whole word is masked alike
        for t in word:
            ids.append(self.tok.mask_id if r < 0.8 else
                       random.randrange(len(self.tok.special_ids), self.tok.vocab_size) if r < 0.9 else t)
            lab.append(t)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows, labels, spans = [], [], []
        for i, text in enumerate(texts):
            ids, lab = [self.tok.cls_id], [IGNORE]
            for word in self.word_ids(text):
                if random.random() < self.mask_rate:
                    self._mask_word(word, ids, lab)
                else:
                    spans.append((i, len(ids), word))
                    ids += word
                    lab += [IGNORE] * len(word)
            rows.append(ids + [self.tok.sep_id])
            labels.append(lab + [IGNORE])
        if spans and all(l == IGNORE for lab in labels for l in lab):
            # Nothing to predict would make the loss 0/0 = NaN: mask one word (drawn uniformly) instead.
            i, start, word = spans[random.randrange(len(spans))]
            ids, lab = rows[i][:start], labels[i][:start]
            self._mask_word(word, ids, lab)
            rows[i] = ids + rows[i][start + len(word):]
            labels[i] = lab + labels[i][start + len(word):]
        n = max(map(len, rows))
        batch = {"input_ids": torch.full((len(rows), n), self.tok.pad_id), "labels": torch.full((len(rows), n), IGNORE),
                 "attention_mask": torch.zeros(len(rows), n, dtype=torch.long)}
        for i, (r, l) in enumerate(zip(rows, labels)):
            batch["input_ids"][i, :len(r)] = torch.tensor(r)
            batch["labels"][i, :len(l)] = torch.tensor(l)
            batch["attention_mask"][i, :len(r)] = 1
        batch["segment_ids"] = torch.zeros_like(batch["input_ids"])
        return batch


def split_source_target(text: str) -> tuple[str, str]:
    """UniLM pretraining pair from one passage: the first sentence (or line / half) as the
    source, the rest as the target."""
    for sep in ("\n", "。", "！", "？", "；", "，", ". "):
        i = text.find(sep)
        if 0 < i < len(text) - len(sep):
            return text[:i + len(sep)].strip(), text[i + len(sep):].strip()
    half = max(1, len(text) // 2)
    return text[:half], text[half:] or text


class UniLMPairs:
    """Collate function: texts -> ``[CLS] source [SEP] target [SEP]`` batches for :func:`unilm_loss`."""

    def __init__(self, tokenizer: Tokenizer, maxlen: int = 128):
        self.tok, self.maxlen = tokenizer, maxlen

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tok.encode_batch([split_source_target(t) for t in texts], maxlen=self.maxlen)


def mlm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens (:func:`kexue.losses.masked_lm_loss`); 0 (not 0/0 = NaN) for a
    batch without any. Logits are computed at the masked positions only (``logits_mask``): the same loss as
    projecting every position onto the vocabulary, for ~15 % of that product's cost."""
    picked = batch["labels"] != IGNORE
    logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], logits_mask=picked).logits
    return masked_lm_loss(logits, batch["labels"])


def unilm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy on the target segment only (:func:`kexue.losses.next_token_loss`; the model must
    use ``application="unilm"``): position t predicts token t + 1 wherever that token is a real target token,
    and only there are logits computed."""
    ids, segs, mask = batch["input_ids"], batch["segment_ids"], batch["attention_mask"]
    target = (segs == 1) & (mask == 1)
    return next_token_loss(model(ids, segs, mask, logits_mask=next_token_positions(target)).logits, ids, target)
