"""The tokenizers model families ship, behind the API of :class:`kexue.text.tokenizer.Tokenizer`.

* ``tokenizer.json`` (a ``tokenizers`` pipeline: BPE as GPT-2's, Unigram, WordPiece), read with the
  ``tokenizers`` library, its special tokens named by ``tokenizer_config.json`` / ``special_tokens_map.json``;
* ``spiece.model`` (SentencePiece Unigram, T5 / mT5): the model proto is read here (no ``sentencepiece``
  needed) and turned into the ``tokenizers`` pipeline transformers' ``T5Tokenizer`` builds from it: the
  pieces and scores as a Unigram model, the precompiled normalisation map, whitespace split + Metaspace
  ("▁" prepended), ``</s>`` after each sequence, ``extra_ids`` sentinels ``<extra_id_i>`` appended;
* ``vocab.txt``: kexue's WordPiece :class:`~kexue.text.tokenizer.Tokenizer` (bert4keras's conventions).

:func:`load_tokenizer` picks by the files of a folder. :class:`HFTokenizer` keeps bert4keras's API:
``encode(first, second, maxlen) -> (ids, segment_ids)`` with the pipeline's own special tokens, the
longer side trimmed from its end when too long, ``encode_batch``, ``decode``, ``pad_id`` / ``sep_id`` /
... (``None`` when the vocabulary has no such token; ``sep_id`` falls back to the end-of-sequence token).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Pipeline
from tokenizers.models import Unigram

from kexue.io import read_utf8, write_json, write_text
from kexue.text.tokenizer import batch_decode, check_text, one_sequence

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")


class HFTokenizer:
    """A ``tokenizers`` pipeline with bert4keras's tokenizer API (see the module docstring).

    ``specials``: role (pad, unk, cls, sep, mask, bos, eos) -> token string, each a token of the vocabulary;
    ``config``: the ``tokenizer_config.json`` fields written back by :meth:`save`."""

    def __init__(self, pipeline: Pipeline, specials: dict[str, str] | None = None, config: dict | None = None,
                 source: str = "tokenizer"):
        self.pipeline, self.source = pipeline, source
        self.pipeline.no_truncation()
        self.pipeline.no_padding()
        self.vocab = pipeline.get_vocab(with_added_tokens=True)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.specials = dict(specials or {})
        for role, token in self.specials.items():
            if role not in ROLES:
                raise ValueError(f"{source}: unknown special-token role {role!r} (known: {', '.join(ROLES)})")
            if token not in self.vocab:
                raise ValueError(f"{source}: the {role} token {token!r} is not in the vocabulary")
        self.config = dict(config or {})
        ids = {role: self.vocab[t] for role, t in self.specials.items()}
        self.pad_id, self.unk_id, self.cls_id = ids.get("pad"), ids.get("unk"), ids.get("cls")
        self.mask_id, self.bos_id, self.eos_id = ids.get("mask"), ids.get("bos"), ids.get("eos")
        self.sep_id = ids.get("sep", self.eos_id)  # what ends a generated text
        added = [t.content for t in pipeline.get_added_tokens_decoder().values() if t.special]
        self.special_ids = {self.vocab[t] for t in added} | set(ids.values())

    # -- reading and writing ---------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **specials: str) -> "HFTokenizer":
        """``tokenizer.json`` (with the folder's ``tokenizer_config.json`` / ``special_tokens_map.json``)."""
        path = Path(path)
        try:
            pipeline = Pipeline.from_file(str(path))
        except Exception as e:  # the library's own error: a parse error, an unknown component
            raise ValueError(f"{path} is not a tokenizers file: {e}") from None
        config = _read_config(path.parent)
        return cls(pipeline, {**_specials(config, pipeline, path.parent), **specials}, config, str(path))

    def save(self, directory: str | os.PathLike) -> None:
        """``tokenizer.json`` + ``tokenizer_config.json`` (its special tokens), which :func:`load_tokenizer` reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / "tokenizer.json", self.pipeline.to_str())
        config = {**self.config, **{f"{role}_token": t for role, t in self.specials.items()},
                  "tokenizer_class": self.config.get("tokenizer_class", "PreTrainedTokenizerFast")}
        write_json(directory / "tokenizer_config.json", config)

    # -- the Tokenizer API -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token, self.unk_id)

    def id_to_token(self, i: int) -> str:
        return self.inverse[i]

    def tokenize(self, text: str) -> list[str]:
        return self.pipeline.encode(check_text(text), add_special_tokens=False).tokens

    def encode(self, first: str, second: str | None = None, maxlen: int | None = None,
               truncate: bool = True) -> tuple[list[int], list[int]]:
        """Ids and type ids of ``first`` (and ``second``) with the pipeline's special tokens (its post-processor);
        over ``maxlen`` tokens the longer side loses tokens from its end, one at a time (transformers'
        ``truncation="longest_first"``; ``truncate=False``: a ValueError instead). A lone surrogate is refused
        naming its position (:func:`kexue.text.tokenizer.check_text`)."""
        check_text(first)
        if second is not None:
            check_text(second)
        if maxlen is None:
            out = self.pipeline.encode(first, second)
            return list(out.ids), list(out.type_ids)
        specials = self.pipeline.num_special_tokens_to_add(second is not None)
        total = len(self.pipeline.encode(first, add_special_tokens=False).ids) + specials
        if second is not None:
            total += len(self.pipeline.encode(second, add_special_tokens=False).ids)
        if total > maxlen and not truncate:
            raise ValueError(f"input has {total} tokens, more than maxlen={maxlen}")
        if maxlen < specials + (0 if second is None else 1):
            raise ValueError(f"maxlen={maxlen} leaves no room for text")
        self.pipeline.enable_truncation(maxlen, strategy="longest_first")  # transformers' longest_first
        try:
            out = self.pipeline.encode(first, second)
        finally:
            self.pipeline.no_truncation()
        return list(out.ids), list(out.type_ids)

    def encode_batch(self, texts: Sequence[str] | Sequence[tuple[str, str]], maxlen: int | None = None,
                     truncate: bool = True) -> dict[str, torch.Tensor]:
        """Encode and right-pad with ``pad_id`` (0 without one): ``input_ids``, ``segment_ids``, ``attention_mask``."""
        from kexue.text.tokenizer import pad_batch

        encoded = [self.encode(t, maxlen=maxlen, truncate=truncate) if isinstance(t, str)
                   else self.encode(t[0], t[1], maxlen=maxlen, truncate=truncate) for t in texts]
        return pad_batch(encoded, self.pad_id if self.pad_id is not None else 0)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of one sequence of ids; a batch is :meth:`batch_decode`'s."""
        return self.pipeline.decode(one_sequence(ids), skip_special_tokens=skip_special)

    def batch_decode(self, rows, skip_special: bool = True) -> list[str]:
        """:meth:`decode` of each row of a batch, as transformers' ``batch_decode``."""
        return batch_decode(self, rows, skip_special)


def _read_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return config


def _token(value, where: str) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or a serialized AddedToken."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where} must be a token string, got {value!r}")


def _specials(config: dict, pipeline: Pipeline, directory: Path) -> dict[str, str]:
    """The special tokens a folder names (tokenizer_config.json over special_tokens_map.json); a named token
    the vocabulary lacks is refused by name. Without any named, the usual spellings present in the vocabulary."""
    named: dict[str, str] = {}
    mapping = directory / "special_tokens_map.json"
    sources = [(json.loads(mapping.read_text(encoding="utf-8")), mapping)] if mapping.is_file() else []
    sources.append((config, directory / "tokenizer_config.json"))
    for source, path in sources:
        for role in ROLES:
            token = _token(source.get(f"{role}_token"), f"{path} field '{role}_token'")
            if token is not None:
                named[role] = token
    vocab = pipeline.get_vocab(with_added_tokens=True)
    for role, token in named.items():
        if token not in vocab:
            raise ValueError(f"{directory}: the {role}_token {token!r} is not in the tokenizer's vocabulary")
    if not named:
        usual = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]",), "sep": ("[SEP]",),
                 "mask": ("[MASK]", "<mask>"), "eos": ("</s>", "<|endoftext|>"), "bos": ("<s>",)}
        for role, spellings in usual.items():
            found = [t for t in spellings if t in vocab]
            if found:
                named[role] = found[0]
    return named


# -------------------------------------------------------------------------------------------------
# SentencePiece model files
# -------------------------------------------------------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("a truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: varints as ints, fixed32 as 4 bytes,
    fixed64 as 8 bytes, length-delimited as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} of field {number}")
        if i > len(buf):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire, value


def read_sentencepiece(path: str | os.PathLike) -> dict:
    """The parts of a SentencePiece ``ModelProto`` a tokenizer needs: ``pieces`` [(piece, score, type)],
    ``model_type`` (1 Unigram, 2 BPE, 3 word, 4 char), ``unk_id``, ``byte_fallback``,
    ``precompiled_charsmap`` (bytes), ``add_dummy_prefix``, ``remove_extra_whitespaces``."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({e.strerror or e})") from None
    model = {"pieces": [], "model_type": 1, "unk_id": 0, "byte_fallback": False, "precompiled_charsmap": b"",
             "add_dummy_prefix": True, "remove_extra_whitespaces": True}
    try:
        for number, wire, value in _fields(buf):
            if number == 1 and wire == 2:  # SentencePiece: piece = 1, score = 2 (float), type = 3
                piece, score, kind = "", 0.0, 1
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3 and w == 0:
                        kind = v
                model["pieces"].append((piece, score, kind))
            elif number == 2 and wire == 2:  # TrainerSpec
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        model["model_type"] = v
                    elif n == 40 and w == 0:
                        model["unk_id"] = v
                    elif n == 35 and w == 0:
                        model["byte_fallback"] = bool(v)
            elif number == 3 and wire == 2:  # NormalizerSpec
                for n, w, v in _fields(value):
                    if n == 2 and w == 2:
                        model["precompiled_charsmap"] = bytes(v)
                    elif n == 3 and w == 0:
                        model["add_dummy_prefix"] = bool(v)
                    elif n == 4 and w == 0:
                        model["remove_extra_whitespaces"] = bool(v)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise ValueError(f"{path} is not a SentencePiece model: {e}") from None
    if not model["pieces"]:
        raise ValueError(f"{path} is not a SentencePiece model: it holds no pieces")
    return model


def sentencepiece_tokenizer(path: str | os.PathLike, extra_ids: int | None = None) -> HFTokenizer:
    """A T5 / mT5 ``spiece.model`` (SentencePiece Unigram) as transformers' ``T5Tokenizer`` reads it: ids are
    the pieces' own, ``</s>`` closes each sequence, ``extra_ids`` sentinels ``<extra_id_{i}>`` follow the pieces
    (from the folder's ``tokenizer_config.json``, else 100, T5's). Byte-fallback and non-Unigram models are
    refused by name."""
    path = Path(path)
    spm = read_sentencepiece(path)
    if spm["model_type"] != 1:
        names = {2: "BPE", 3: "word", 4: "char"}
        raise ValueError(f"{path}: a SentencePiece {names.get(spm['model_type'], spm['model_type'])} model; kexue "
                         "reads Unigram models (T5, mT5)")
    if spm["byte_fallback"]:
        raise ValueError(f"{path}: byte_fallback=true is not supported (T5 / mT5 models have none)")
    config = _read_config(path.parent)
    if extra_ids is None:
        extra_ids = config.get("extra_ids", 100)
    if not isinstance(extra_ids, int) or isinstance(extra_ids, bool) or extra_ids < 0:
        raise ValueError(f"{path.parent / 'tokenizer_config.json'} field 'extra_ids' must be an integer >= 0, "
                         f"got {extra_ids!r}")
    vocab = [(piece, score) for piece, score, _ in spm["pieces"]]
    present = {piece for piece, _ in vocab}
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1) if f"<extra_id_{i}>" not in present]
    pipeline = Pipeline(Unigram(vocab, unk_id=spm["unk_id"], byte_fallback=False))
    if spm["precompiled_charsmap"]:
        pipeline.normalizer = normalizers.Precompiled(spm["precompiled_charsmap"])
    pipeline.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    pipeline.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    # control pieces (<pad>, </s>, <unk> are type 2 / 3) and the sentinels are special: never split, skipped on decode
    specials = [piece for piece, _, kind in spm["pieces"] if kind in (2, 3)]
    specials += [f"<extra_id_{i}>" for i in range(extra_ids)]
    pipeline.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    names = {"eos": "</s>", "unk": spm["pieces"][spm["unk_id"]][0], "pad": "<pad>"}
    names = {role: t for role, t in names.items() if t in pipeline.get_vocab(with_added_tokens=True)}
    if "eos" in names:
        eos = names["eos"]
        pipeline.post_processor = processors.TemplateProcessing(
            single=["$A", eos], pair=["$A", eos, "$B", eos], special_tokens=[(eos, pipeline.token_to_id(eos))])
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": extra_ids}
    return HFTokenizer(pipeline, names, config, str(path))


def load_tokenizer(directory: str | os.PathLike, **kwargs):
    """The tokenizer of a model folder, by its files: ``vocab.txt`` (kexue's WordPiece, bert4keras's API;
    ``kwargs`` go to :meth:`Tokenizer.from_pretrained`), else ``tokenizer.json``, else ``spiece.model``.
    A folder with none of them is refused by name."""
    from kexue.text.tokenizer import Tokenizer

    directory = Path(directory)
    if (directory / "vocab.txt").is_file():
        return Tokenizer.from_pretrained(directory, **kwargs)
    if kwargs:
        raise TypeError(f"{', '.join(kwargs)}: options of the WordPiece tokenizer (vocab.txt); {directory} has none")
    if (directory / "tokenizer.json").is_file():
        return HFTokenizer.from_file(directory / "tokenizer.json")
    if (directory / "spiece.model").is_file():
        return sentencepiece_tokenizer(directory / "spiece.model")
    raise FileNotFoundError(f"{directory} has no tokenizer: kexue reads vocab.txt (WordPiece), tokenizer.json "
                            "(tokenizers: BPE, Unigram, WordPiece) or spiece.model (SentencePiece)")


__all__ = ["HFTokenizer", "load_tokenizer", "read_sentencepiece", "sentencepiece_tokenizer"]
