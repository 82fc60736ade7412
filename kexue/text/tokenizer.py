"""WordPiece tokenisation (BERT vocabularies) on the ``tokenizers`` library, with bert4keras's API.

``encode(first, second, maxlen)`` gives ``(token_ids, segment_ids)`` for ``[CLS] a [SEP] b [SEP]``
and, when too long, trims the longer side from its end (bert4keras ``truncate_sequences``), or
raises if truncation is off. A ``pre_tokenize`` hook (e.g. :func:`jieba_words`) cuts text into
words first: words found in the vocabulary stay whole, the rest fall back to WordPiece — the
word+char scheme of WoBERT / T5 PEGASUS (《提速不掉点：基于词颗粒度的中文WoBERT》).

Edges, each decided once: ``encode_batch([])`` is an empty batch (``[0, 0]`` tensors); ``decode`` takes one
sequence of ids and returns one string, so a 2-D batch is refused with a pointer to ``batch_decode``, which
decodes each row as transformers' ``batch_decode`` does (transformers 5's ``decode`` returns a list for a batch;
kexue keeps one return type per method); a text holding a lone surrogate (U+D800–U+DFFF, what ``errors="surrogateescape"``
or a broken UTF-16 source leaves) is not Unicode text and is refused naming its position, never replaced.
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from tokenizers.implementations import BertWordPieceTokenizer

from kexue.io import NotUTF8Error, read_utf8, write_json, write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str) -> str:
    """``text`` if it is Unicode text; a lone surrogate raises ``ValueError`` naming its code point and position."""
    if not isinstance(text, str):
        raise TypeError(f"expected a text string, got {type(text).__name__}")
    m = None if text.isascii() else _SURROGATE.search(text)
    if m:
        raise ValueError(f"text has a lone surrogate U+{ord(m.group()):04X} at position {m.start()} (not Unicode "
                         "text: read the source with the right encoding, or decode it with errors='replace')")
    return text


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def jieba_words(text: str) -> list[str]:
    """Cut Chinese text into words with jieba (no HMM, so only dictionary words are formed)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.cut(text, HMM=False)]


def load_vocab(path: str | os.PathLike, error: type[ValueError] = NotUTF8Error) -> list[str]:
    """The tokens of a ``vocab.txt``, one per line (``\\n``, ``\\r\\n`` or ``\\r``); a file that is not UTF-8 raises
    ``error`` naming the file and the line."""
    lines = read_utf8(path, error).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def build_vocab(texts: Iterable[str], min_count: int = 1, max_size: int | None = None,
                words: Callable[[str], Iterable[str]] | None = None, lowercase: bool = True) -> list[str]:
    """A BERT-style vocabulary from a corpus: special tokens, then characters (or ``words(text)``
    units) by frequency, then ``##c`` continuation pieces for every non-CJK character so that
    Latin words split into characters instead of becoming ``[UNK]``. For training small Chinese
    models where no pretrained vocab exists."""
    counts: Counter[str] = Counter()
    for text in texts:
        text = text.lower() if lowercase else text
        units = words(text) if words else text
        counts.update(u for u in units if u.strip())
    kept = [t for t, c in counts.most_common() if c >= min_count and t not in SPECIAL_TOKENS]
    if max_size is not None:
        kept = kept[: max_size - len(SPECIAL_TOKENS)]
    pieces = [f"##{t}" for t in kept if len(t) == 1 and not _is_cjk(t) and not _is_punct(t)]
    return list(SPECIAL_TOKENS) + kept + pieces


class Tokenizer:
    """WordPiece tokenizer over a BERT ``vocab.txt`` (path, token list or ``{token: id}``)."""

    def __init__(self, vocab: str | os.PathLike | Sequence[str] | dict[str, int], lowercase: bool = True,
                 pre_tokenize: Callable[[str], Iterable[str]] | None = None, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True):
        """``strip_accents=None`` strips accents exactly when lowercasing (BERT's rule);
        ``tokenize_chinese_chars`` splits every CJK character off as its own word."""
        if isinstance(vocab, (str, os.PathLike)):
            vocab = load_vocab(vocab)
        if not isinstance(vocab, dict):
            vocab = {tok: i for i, tok in enumerate(vocab)}
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.vocab = dict(vocab)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.lowercase, self.pre_tokenize = lowercase, pre_tokenize
        self.strip_accents, self.tokenize_chinese_chars = strip_accents, tokenize_chinese_chars
        self._wp = BertWordPieceTokenizer(self.vocab, lowercase=lowercase, strip_accents=strip_accents,
                                          handle_chinese_chars=tokenize_chinese_chars, clean_text=True)
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id, self.mask_id = self.vocab["[CLS]"], self.vocab["[SEP]"], self.vocab["[MASK]"]
        self.special_ids = {self.vocab[t] for t in SPECIAL_TOKENS}

    # tokenizer_config.json fields: read (-> keyword), inert, or refused unless at the given value
    CONFIG_FIELDS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                     "tokenize_chinese_chars": "tokenize_chinese_chars"}
    CONFIG_REFUSED = {"do_basic_tokenize": True, "never_split": None, "unk_token": "[UNK]", "sep_token": "[SEP]",
                      "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
                      "wordpieces_prefix": "##", "do_split_on_punc": True}
    CONFIG_CLASSES = (None, "BertTokenizer", "BertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> "Tokenizer":
        """Read ``vocab.txt`` and ``tokenizer_config.json``: ``do_lower_case``, ``strip_accents`` and
        ``tokenize_chinese_chars`` are honoured (keywords override them); fields this WordPiece
        tokenizer cannot follow (another tokenizer class, other special tokens, no basic
        tokenisation, never_split lists) raise a ValueError naming the field and the file."""
        import json

        directory = Path(directory)
        cfg_path = directory / "tokenizer_config.json"
        if cfg_path.exists():
            try:
                cfg = json.loads(read_utf8(cfg_path))
            except json.JSONDecodeError as e:
                raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
            if not isinstance(cfg, dict):
                raise ValueError(f"{cfg_path} must hold a JSON object")
            for field, allowed in cls.CONFIG_REFUSED.items():
                value = cfg.get(field, allowed)
                if isinstance(value, dict):  # serialized AddedToken
                    value = value.get("content")
                if value != allowed and not (allowed is None and not value):
                    raise ValueError(f"tokenizer_config.json field {field!r}={value!r} in {cfg_path} is not "
                                     f"supported (kexue's WordPiece tokenizer needs {allowed!r})")
            klass = cfg.get("tokenizer_class")
            if klass not in cls.CONFIG_CLASSES and "pre_tokenize" not in kwargs:
                raise ValueError(f"tokenizer_config.json field 'tokenizer_class'={klass!r} in {cfg_path} is not a "
                                 "BERT WordPiece tokenizer; pass pre_tokenize= (e.g. kexue.text.tokenizer.jieba_words "
                                 "for RoFormer / WoBERT vocabularies) to use it with kexue")
            for field, keyword in cls.CONFIG_FIELDS.items():
                if field in cfg and keyword not in kwargs:
                    value = cfg[field]
                    if not (isinstance(value, bool) or (field == "strip_accents" and value is None)):
                        raise ValueError(f"tokenizer_config.json field {field!r} in {cfg_path} must be true/false, "
                                         f"got {value!r}")
                    kwargs[keyword] = value
        return cls(directory / "vocab.txt", **kwargs)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        tokens = [self.inverse[i] for i in range(len(self.inverse))]
        write_text(directory / "vocab.txt", "\n".join(tokens) + "\n")
        write_json(directory / "tokenizer_config.json",
                   {"do_lower_case": self.lowercase, "strip_accents": self.strip_accents,
                    "tokenize_chinese_chars": self.tokenize_chinese_chars, "tokenizer_class": "BertTokenizer"})

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.unk_id)

    def id_to_token(self, i: int) -> str:
        return self.inverse[i]

    # -- tokenisation ------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        check_text(text)
        if self.pre_tokenize is None:
            return self._wp.encode(text, add_special_tokens=False).ids
        ids: list[int] = []
        for word in self.pre_tokenize(text):
            key = word.lower() if self.lowercase else word
            if key in self.vocab:
                ids.append(self.vocab[key])
            elif word.strip():
                ids.extend(self._wp.encode(word, add_special_tokens=False).ids)
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.inverse[i] for i in self._ids(text)]

    def encode(self, first: str, second: str | None = None, maxlen: int | None = None,
               truncate: bool = True) -> tuple[list[int], list[int]]:
        """``[CLS] first [SEP] (second [SEP])`` ids and segment ids (0 for first, 1 for second).

        Over ``maxlen`` tokens the longer side loses tokens from its end; with ``truncate=False``
        a too-long input raises ``ValueError`` instead.
        """
        a = self._ids(first)
        b = self._ids(second) if second is not None else None
        specials = 2 if b is None else 3
        if maxlen is not None:
            total = len(a) + (len(b) if b is not None else 0) + specials
            if total > maxlen:
                if not truncate:
                    raise ValueError(f"input has {total} tokens, more than maxlen={maxlen}")
                if maxlen < specials + (0 if b is None else 1):
                    raise ValueError(f"maxlen={maxlen} leaves no room for text")
                while len(a) + (len(b) if b is not None else 0) + specials > maxlen:
                    (a if b is None or len(a) >= len(b) else b).pop()
        ids = [self.cls_id] + a + [self.sep_id]
        segs = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_id]
            segs += [1] * (len(b) + 1)
        return ids, segs

    def encode_batch(self, texts: Sequence[str] | Sequence[tuple[str, str]], maxlen: int | None = None,
                     truncate: bool = True) -> dict[str, torch.Tensor]:
        """Encode and right-pad: ``input_ids``, ``segment_ids``, ``attention_mask`` ``[B, L]``."""
        encoded = [self.encode(t, maxlen=maxlen, truncate=truncate) if isinstance(t, str)
                   else self.encode(t[0], t[1], maxlen=maxlen, truncate=truncate) for t in texts]
        return pad_batch(encoded, self.pad_id)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Join tokens back into text: ``##`` pieces glue on, CJK characters and punctuation take no space.
        One sequence of ids (list, 1-D tensor or array); a batch is :meth:`batch_decode`'s."""
        out = ""
        for i in one_sequence(ids):
            if skip_special and i in self.special_ids:
                continue
            tok = self.inverse.get(i, "[UNK]")
            if tok.startswith("##"):
                out += tok[2:]
            elif not out or (len(tok) == 1 and (_is_cjk(tok) or _is_punct(tok))) or _is_cjk(out[-1]):
                out += tok
            else:
                out += " " + tok
        return out

    def batch_decode(self, rows: Iterable[Iterable[int]], skip_special: bool = True) -> list[str]:
        """:meth:`decode` of each row of a batch (a 2-D tensor or array, or a list of id lists), as transformers'
        ``batch_decode``; padding is a special token, skipped with the others."""
        return batch_decode(self, rows, skip_special)


def one_sequence(ids: Iterable[int]) -> list[int]:
    """The ids of one sequence, as ints; a 2-D batch (tensor, array, list of lists) is refused for
    ``batch_decode`` (a tokenizer's ``decode`` returns one string)."""
    shape = getattr(ids, "shape", None)
    if shape is not None and len(shape) != 1:
        raise ValueError(f"decode takes one sequence of ids, got a {len(shape)}-D array of shape {tuple(shape)}; "
                         "decode a batch with batch_decode")
    ids = list(ids)
    if any(isinstance(i, (list, tuple)) or len(getattr(i, "shape", ())) > 0 for i in ids):
        raise ValueError("decode takes one sequence of ids, got a sequence of sequences; decode a batch with "
                         "batch_decode")
    return [int(i) for i in ids]


def batch_decode(tokenizer, rows, skip_special: bool = True) -> list[str]:
    """``tokenizer.decode`` of each row of a batch (2-D tensor or array, or a list of id sequences)."""
    shape = getattr(rows, "shape", None)
    if shape is not None and len(shape) != 2:
        raise ValueError(f"batch_decode takes a batch of id sequences, got a {len(shape)}-D array of shape "
                         f"{tuple(shape)}")
    return [tokenizer.decode(row, skip_special) for row in rows]


def pad_batch(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int = 0,
              length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad ``(ids, segment_ids)`` pairs into ``input_ids``/``segment_ids``/``attention_mask`` (no pairs:
    ``[0, length or 0]`` tensors)."""
    length = length or max((len(ids) for ids, _ in encoded), default=0)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    segment_ids = torch.zeros((len(encoded), length), dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (ids, segs) in enumerate(encoded):
        n = min(len(ids), length)
        input_ids[row, :n] = torch.tensor(ids[:n])
        segment_ids[row, :n] = torch.tensor(segs[:n])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": attention_mask}
