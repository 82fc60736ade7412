"""Predictors for model folders without a recipe task: a sentence encoder (``kexue embed`` / ``search``,
pair similarity) and a plain generator (application ``lm`` / ``unilm``, e.g. ``kexue pretrain``'s
output, or a T5 PEGASUS folder: ``[CLS] text [SEP]`` in, decoder from ``decoder_start_token_id`` to
``eos_token_id``, jieba word + char tokenizer).

Encoder: the sentence vector is the folder's pooling of the last hidden states (mean over real tokens
unless it says otherwise), L2-normalised if it says so, then its post-processing (BERT-whitening), as
:mod:`kexue.recipes.st_folder` reads it from a kexue manifest or a sentence-transformers folder; the
similarity of a pair is the cosine of their vectors.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from kexue.generation import GenerationOptions, decode_state, decoding_state
from kexue.models import ENCODER_DECODER, build_model, decoding_kind, family_of
from kexue.recipes.predictor import Predictor
from kexue.models.pretrained import embed
from kexue.similarity.search import build_index
from kexue.recipes.folder import load_backbone, read_task
from kexue.recipes.st_folder import EncoderSpec, encoder_spec
from kexue.recipes.sampling import Decoding, special_ids, task_options


class EncoderPredictor(Predictor):
    """``predict(["text", ["a", "b"]])`` -> ``[{"text", "embedding"}, {"text", "similarity"}]``."""

    task, model_attr = "encoder", "encoder"
    settings_schema, settings_optional = {"maxlen": "integer"}, True
    poolings = ("mean", "cls", "max", "last-token", "weighted-mean", "first-last-avg")

    def __init__(self, model, tokenizer, maxlen: int = 256, spec: EncoderSpec | None = None):
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        maxlen = min(maxlen, positions) if isinstance(positions, int) else maxlen  # never past the model's positions
        self.encoder, self.tokenizer, self.maxlen = model.eval(), tokenizer, maxlen
        self.spec = spec or EncoderSpec()

    @classmethod
    def from_folder(cls, directory) -> "EncoderPredictor":
        model, tokenizer = load_backbone(directory, application="encoder")
        spec = encoder_spec(directory, read_task(directory, required=False).get("settings"))
        return cls(model, tokenizer, spec.maxlen or 256, spec)

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

    def embed(self, texts: list[str], prompt_name: str | None = None, post_processing: bool = True) -> Tensor:
        """``[N, d]`` sentence vectors: the folder's prompt (``prompt_name``, or its default), pooling,
        normalisation and (unless ``post_processing=False``) whitening."""
        texts, skip = self.spec.texts(texts, self.spec.prompt(prompt_name), self.tokenizer)
        vectors = embed(self.encoder, self.tokenizer, texts, maxlen=self.maxlen, progress=self.progress,
                        pooling=self.spec.pooling, normalize=self.spec.normalize, skip=skip)
        return self.spec.post(vectors) if post_processing else vectors

    def _predict(self, items: list, **_) -> list[dict]:
        texts = sorted({t for x in items for t in ((x,) if isinstance(x, str) else x)})
        where = {t: i for i, t in enumerate(texts)}
        vectors = self.embed(texts)
        out = []
        for x in items:
            if isinstance(x, str):
                out.append({"text": x, "embedding": vectors[where[x]].tolist()})
            else:
                a, b = torch.nn.functional.normalize(vectors[[where[x[0]], where[x[1]]]], dim=-1)
                out.append({"text": list(x), "similarity": float(a @ b)})
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
    options = GenerationOptions.user_options()
    defaults = {"max_new_tokens": 64}

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

    def decodings(self, texts: list[str], **options) -> list[Decoding]:
        tok = self.tokenizer
        options = task_options(options, self.defaults, sample=None)  # greedy unless a sampling option (or beams)
        seq2seq = decoding_kind(self.lm) == ENCODER_DECODER  # T5
        eos = self.lm.config.eos_token_id if seq2seq else tok.sep_id
        out = []
        for text in texts:
            ids, segs = tok.encode(text)
            if seq2seq:
                state = decoding_state(self.lm, torch.tensor([ids]))
            else:
                if self.lm.application == "lm" and ids and ids[-1] == tok.sep_id:
                    ids, segs = ids[:-1], segs[:-1]  # [CLS] text: the continuation follows
                # no token-type table (GPT-2): all-zero types are not passed (GPT-2 would add wte[0] to each token)
                typed = self.lm.application == "unilm" or getattr(self.lm.config, "type_vocab_size", 0) or any(segs)
                state = decoding_state(self.lm, torch.tensor([ids]), None, torch.tensor([segs]) if typed else None,
                                       banned_ids=special_ids(tok))
            output = (lambda text: lambda rows: {"text": text, "generations": [tok.decode(r) for r in rows]})(text)
            out.append(Decoding(state, options, eos, tok.decode, output, len(ids)))
        return out

    @torch.no_grad()
    def _predict(self, texts: list[str], **options) -> list[dict]:
        return [d.output(decode_state(d.state, d.options, d.eos_id)) for d in self.decodings(texts, **options)]


__all__ = ["EncoderPredictor", "GenerationPredictor"]
