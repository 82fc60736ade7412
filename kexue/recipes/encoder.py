"""Predictors for model folders without a recipe task: a sentence encoder (``kexue embed`` / ``search``,
pair similarity) and a plain generator (application ``lm`` / ``unilm``, e.g. ``kexue pretrain``'s
output, or a T5 PEGASUS folder: ``[CLS] text [SEP]`` in, decoder from ``decoder_start_token_id`` to
``eos_token_id``, jieba word + char tokenizer).

Encoder: the sentence vector is the mean of the last hidden states over real tokens, L2-normalised
(sentence-transformers' pooling, the one the demo's CoSENT fine-tune trains); the similarity of a
pair is the cosine of their vectors.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from kexue.recipes import args as at
from kexue.generation import decoding_state
from kexue.models import ENCODER_DECODER, build_model, decoding_kind, family_of
from kexue.recipes.predictor import Predictor
from kexue.models.pretrained import embed
from kexue.similarity.search import build_index
from kexue.recipes.folder import load_backbone, read_task
from kexue.recipes.sampling import decode, special_ids


class EncoderPredictor(Predictor):
    """``predict(["text", ["a", "b"]])`` -> ``[{"text", "embedding"}, {"text", "similarity"}]``."""

    task, model_attr = "encoder", "encoder"

    def __init__(self, model, tokenizer, maxlen: int = 256):
        self.encoder, self.tokenizer, self.maxlen = model.eval(), tokenizer, maxlen

    @classmethod
    def from_folder(cls, directory) -> "EncoderPredictor":
        model, tokenizer = load_backbone(directory, application="encoder")
        return cls(model, tokenizer, read_task(directory, required=False).get("settings", {}).get("maxlen", 256))

    @staticmethod
    def check_text(item) -> str:
        if not isinstance(item, str):
            raise ValueError(f"expected a text string, got {type(item).__name__}")
        return item

    def check(self, item):
        if isinstance(item, (list, tuple)):
            if len(item) != 2 or not all(isinstance(t, str) for t in item):
                raise ValueError('a pair input is ["text_a", "text_b"]')
            return tuple(item)
        return self.check_text(item)

    def embed(self, texts: list[str]) -> Tensor:
        return embed(self.encoder, self.tokenizer, texts, maxlen=self.maxlen, progress=self.progress)

    def _predict(self, items: list, **_) -> list[dict]:
        texts = sorted({t for x in items for t in ((x,) if isinstance(x, str) else x)})
        where = {t: i for i, t in enumerate(texts)}
        vectors = self.embed(texts)
        out = []
        for x in items:
            if isinstance(x, str):
                out.append({"text": x, "embedding": vectors[where[x]].tolist()})
            else:
                out.append({"text": list(x), "similarity": float(vectors[where[x[0]]] @ vectors[where[x[1]]])})
        return out

    def search(self, queries: list[str], corpus: list[str], k: int, lines: list[int] | None = None) -> list[dict]:
        """The ``k`` corpus sentences nearest each query (cosine); ``line``: ``lines[j]`` or ``j + 1``."""
        lines = lines or list(range(1, len(corpus) + 1))
        index = build_index(self.embed(corpus))
        scores, idx = index.search(self.embed(queries), k)
        return [{"query": q, "results": [{"text": corpus[j], "line": lines[j], "score": s}
                                         for s, j in zip(srow, jrow)]}
                for q, srow, jrow in zip(queries, scores.tolist(), idx.tolist())]


class GenerationPredictor(Predictor):
    """A causal LM continues the text; a UniLM or a T5 writes the target of the source text.
    ``predict(["text"])`` -> ``[{"text", "generations": [...]}]`` (greedy unless sampling/beam options)."""

    task, model_attr = "generate", "lm"
    options = {"num_samples": at.positive_int, "num_beams": at.positive_int, "top_k": at.positive_int,
               "top_p": at.open_probability, "temperature": at.positive_float, "max_new_tokens": at.positive_int,
               "seed": at.nonnegative_int}

    def __init__(self, model, tokenizer):
        self.lm, self.tokenizer = model.eval(), tokenizer

    @classmethod
    def from_folder(cls, directory) -> "GenerationPredictor":
        """The folder's model (its kexue block: family, application) and its family's tokenizer."""
        model = build_model(checkpoint=Path(directory)).eval()
        return cls(model, family_of(model).tokenizer(directory))

    def check(self, item):
        if not isinstance(item, str):
            raise ValueError(f"a generation input is a text string, got {type(item).__name__}")
        return item

    @torch.no_grad()
    def _predict(self, texts: list[str], max_new_tokens: int = 64, num_samples: int = 1, **options) -> list[dict]:
        tok = self.tokenizer
        # greedy unless a sampling option is given (or beams)
        options["do_sample"] = bool({"top_k", "top_p", "temperature", "seed"} & set(options))
        seq2seq = decoding_kind(self.lm) == ENCODER_DECODER  # T5
        eos = self.lm.config.eos_token_id if seq2seq else tok.sep_id
        out = []
        for text in texts:
            ids, segs = tok.encode(text)
            if seq2seq:
                state = decoding_state(self.lm, torch.tensor([ids]))
            else:
                if self.lm.application == "lm":
                    ids, segs = ids[:-1], segs[:-1]  # [CLS] text: the continuation follows
                state = decoding_state(self.lm, torch.tensor([ids]), None, torch.tensor([segs]),
                                       banned_ids=special_ids(tok))
            rows = decode(state, max_new_tokens, eos, num_samples=num_samples, **options)
            out.append({"text": text, "generations": [tok.decode(r) for r in rows]})
        return out


__all__ = ["EncoderPredictor", "GenerationPredictor"]
