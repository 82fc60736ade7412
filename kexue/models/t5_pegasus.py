"""T5 PEGASUS: a Chinese T5 v1.1 (mT5 layout) with a word+char BERT vocabulary.

    tokens(x) = ⋃_{w ∈ jieba(x)} ( [w] if w ∈ V else WordPiece(w) )

《T5 PEGASUS：开源一个中文生成式预训练模型》: text is first cut into words with jieba; a word found in
the vocabulary is one token, any other word falls back to characters (WordPiece over the same vocab).
Encoder input ``[CLS] text [SEP]``; the decoder starts from ``[CLS]`` and ends at ``[SEP]``.

No Chinese T5 PEGASUS vocabulary ships with kexue (nothing is downloaded): pass the real
``vocab.txt`` of the checkpoint to :func:`t5_pegasus_tokenizer` / :func:`load_t5_pegasus`. The tokenizer
itself is the T5 family's, in :mod:`kexue.models.t5` (its family record names it).
:func:`word_char_vocab` builds a small word+char vocabulary from a corpus, for tests and toy models.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from kexue.models.family import build_model
from kexue.models.t5 import T5, folder_tokenizer, t5_pegasus_tokenizer
from kexue.text.tokenizer import Tokenizer, build_vocab, jieba_words


def word_char_vocab(texts: Iterable[str], min_word_count: int = 2, lowercase: bool = False) -> list[str]:
    """Special tokens, every character, and every multi-character jieba word seen ``min_word_count``
    times — the shape of T5 PEGASUS's vocab (chars for fallback, frequent words whole)."""
    texts = list(texts)
    vocab = build_vocab(texts, lowercase=lowercase)  # characters (and ## pieces for Latin letters)
    words: dict[str, int] = {}
    for t in texts:
        for w in jieba_words(t.lower() if lowercase else t):
            if len(w) > 1 and all("\u4e00" <= c <= "\u9fff" for c in w):
                words[w] = words.get(w, 0) + 1
    known = set(vocab)
    vocab += [w for w, c in sorted(words.items(), key=lambda kv: -kv[1]) if c >= min_word_count and w not in known]
    return vocab


def load_t5_pegasus(directory: str | os.PathLike) -> tuple[T5, Tokenizer]:
    """Model and tokenizer from a converted T5 PEGASUS folder (HF ``config.json`` + weights + ``vocab.txt``).
    Generate with ``decoder_start_token_id = [CLS]`` and ``eos_id = [SEP]`` (set in its config.json)."""
    directory = Path(directory)
    return build_model(checkpoint=directory, family="t5"), folder_tokenizer(directory)


__all__ = ["load_t5_pegasus", "t5_pegasus_tokenizer", "word_char_vocab"]
