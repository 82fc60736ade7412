"""Model families and ``build_model``, the counterpart of bert4keras's ``build_transformer_model``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Transformer, TransformerOutput
from .bert import BERT, RoFormer, RoFormerV2
from .config import TransformerConfig
from .gpt import GPT

FAMILIES: dict[str, type[Transformer]] = {
    "bert": BERT,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "gpt": GPT,
}


def build_model(
    config: TransformerConfig | dict[str, Any] | str | Path | None = None,
    checkpoint: str | Path | None = None,
    family: str | None = None,
    application: str = "encoder",
    with_pool: bool = False,
    with_mlm: bool = False,
    cond_dim: int | None = None,
    strict: bool = True,
) -> Transformer:
    """Build a model and optionally load HF-layout weights.

    ``config``: a :class:`TransformerConfig`, a dict, a ``config.json`` path, or ``None`` to read it
    from the ``checkpoint`` folder. ``family`` defaults to ``config.model_type``.
    ``application``: ``encoder`` (bidirectional), ``lm`` (causal) or ``unilm`` (seq2seq prefix mask).
    """
    if config is None:
        if checkpoint is None:
            raise ValueError("build_model needs a config or a checkpoint folder holding config.json")
        config = Path(checkpoint)
    if isinstance(config, (str, Path)):
        config = TransformerConfig.from_file(config)
    elif isinstance(config, dict):
        config = TransformerConfig.from_dict(config)
    family = family or config.model_type
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    if family != config.model_type:
        config.model_type = family
    model = FAMILIES[family](config, application=application, with_pool=with_pool, with_mlm=with_mlm,
                             cond_dim=cond_dim)
    if checkpoint is not None:
        from ..checkpoints import load_checkpoint

        load_checkpoint(model, checkpoint, strict=strict)
    return model


__all__ = ["FAMILIES", "BERT", "GPT", "RoFormer", "RoFormerV2", "Transformer", "TransformerConfig",
           "TransformerOutput", "build_model"]
