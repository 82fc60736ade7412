"""Model families and ``build_model``, the counterpart of bert4keras's ``build_transformer_model``."""
from __future__ import annotations

from .base import Transformer, TransformerOutput
from .bert import BERT, RoFormer, RoFormerV2
from .config import ConfigError, Options, TransformerConfig
from .family import FAMILIES, REGISTRY, Family, build_model, from_state, hf_config
from .gpt import GPT
from .t5 import T5, T5Config
from .weights import CheckpointError, LoadReport, Rule, WeightMap

__all__ = ["FAMILIES", "REGISTRY", "BERT", "GPT", "T5", "CheckpointError", "ConfigError", "Family", "LoadReport",
           "Options", "RoFormer", "RoFormerV2", "Rule", "T5Config", "Transformer", "TransformerConfig",
           "TransformerOutput", "WeightMap", "build_model", "from_state", "hf_config"]
