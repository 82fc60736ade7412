"""Tiny seeded random-weight models of every family (``kexue.models.REGISTRY``), fed real Chinese text
(STS-B-zh through kexue-zh-mini's character tokenizer), shared by the int8 and compiled-path tests."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import Tensor, nn

from kexue.data.shipped import sts_zh
from kexue.models import CAUSAL, ENCODER_DECODER, PREFIX, REGISTRY, build_model
from kexue.models.pretrained import zh_mini_path
from kexue.text.tokenizer import Tokenizer

FAMILIES = tuple(REGISTRY)  # bert, roformer, roformer_v2, gpt, t5, albert, nezha, electra
# families with an encoder: an "encoder" application, or an encoder-decoder's encoder stack (T5.encode)
ENCODER_FAMILIES = tuple(name for name, f in REGISTRY.items()
                         if "encoder" in f.applications or ENCODER_DECODER in f.decoding.values())
# one decoding (family, application) per family, its richest: T5 seq2seq, the BERT family as UniLM, GPT LM
_RICHEST = (ENCODER_DECODER, PREFIX, CAUSAL)
DECODERS = tuple((name, min(f.decoding, key=lambda a, f=f: _RICHEST.index(f.decoding[a])))
                 for name, f in REGISTRY.items() if f.decoding)


@pytest.fixture(autouse=True)
def quiet_one_thread():
    """Autouse in the quantize / compile test files that import it: one thread, no AVX2 int8 speed notice."""
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*int8pack_mm.*")  # the AVX2 speed notice
        yield


@functools.lru_cache(maxsize=None)
def tokenizer() -> Tokenizer:
    return Tokenizer.from_pretrained(zh_mini_path())


def tiny(family: str, application: str | None = None, layers: int = 2, hidden: int = 64, seed: int = 0,
         **options) -> nn.Module:
    """A seeded random-weight model of ``family`` built by ``build_model`` (vocabulary = the tokenizer's)."""
    vocab = tokenizer().vocab_size
    if family == "t5":
        config = dict(model_type="t5", vocab_size=vocab, d_model=hidden, d_kv=hidden // 4, d_ff=2 * hidden,
                      num_layers=layers, num_heads=4, dropout_rate=0.0)
    else:
        config = dict(model_type=family, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        if "embedding_size" in getattr(REGISTRY[family].model, "hf_defaults", {}):  # ALBERT, ELECTRA: not 128
            config["embedding_size"] = hidden
    torch.manual_seed(seed)
    return build_model(config, application=application, **options).eval()


@functools.lru_cache(maxsize=None)
def sentences(n: int, split: str = "test") -> tuple[str, ...]:
    """The first ``n`` distinct sentences of STS-B-zh ``split``."""
    seen: dict[str, None] = {}
    for p in sts_zh(split):
        seen.setdefault(p.a)
        seen.setdefault(p.b)
        if len(seen) >= n:
            break
    return tuple(seen)[:n]


def encoder_batch(texts) -> dict[str, Tensor]:
    return tokenizer().encode_batch(list(texts), maxlen=64)


def prompts(n: int, length: int) -> Tensor:
    """``[n, length]`` token ids: the first ``length`` tokens of real sentences (equal lengths, no padding)."""
    tok = tokenizer()
    rows = [ids[:length] for ids, _ in (tok.encode(s) for s in sentences(4 * n, "valid")) if len(ids) >= length]
    assert len(rows) >= n, "not enough long sentences"
    return torch.tensor(rows[:n])


def encoder_hidden(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Last hidden states ``[B, L, H]`` (a T5's encoder output)."""
    with torch.inference_mode():
        if hasattr(model, "encode"):
            return model.encode(batch["input_ids"], batch["attention_mask"])
        return model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden


def padded_rows(x: Tensor, mask: Tensor) -> Tensor:
    """The real (unpadded) positions of ``x [B, L, ...]`` as ``[N, ...]``: padded rows are never compared."""
    return x[mask.bool()]


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) would use, or None when it finds none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch without this helper: look for the compiler inductor defaults to
        import os
        import shutil

        return shutil.which(os.environ.get("CXX", "g++"))
    try:
        return get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or a compiler that fails to run
        return None


needs_cxx = pytest.mark.skipif(cxx_compiler() is None,
                               reason="torch.compile on CPU (inductor) needs a C++ compiler and none was found "
                                      "(install g++ or set CXX)")
