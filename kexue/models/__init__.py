"""Model families and ``build_model``, the counterpart of bert4keras's ``build_transformer_model``."""
from __future__ import annotations

from kexue.models.albert import ALBERT, AlbertConfig
from kexue.models.base import Blocks, Transformer, TransformerOutput, set_recompute
from kexue.models.bert import BERT, RoFormer, RoFormerV2
from kexue.models.config import ConfigError, Options, TransformerConfig
from kexue.models.electra import ELECTRA
from kexue.models.family import (CAUSAL, ENCODER_DECODER, FAMILIES, PREFIX, REGISTRY, Family, build_model, decoding_kind,
                                 family_of, from_state, hf_config)
from kexue.models.gpt import GPT
from kexue.models.nezha import NEZHA, NezhaConfig
from kexue.models.t5 import T5, T5Config
from kexue.models.weights import Bert4kerasNames, CheckpointError, LoadReport, Rule, WeightMap, check_fit

__all__ = ["ALBERT", "AlbertConfig", "ELECTRA", "NEZHA", "NezhaConfig", "CAUSAL", "ENCODER_DECODER", "FAMILIES", "PREFIX", "REGISTRY", "BERT", "GPT", "T5", "Bert4kerasNames",
           "CheckpointError", "ConfigError", "Family", "LoadReport", "Options", "RoFormer", "RoFormerV2", "Rule",
           "T5Config", "Transformer", "TransformerConfig", "TransformerOutput", "WeightMap", "build_model",
           "check_fit", "Blocks", "set_recompute", "decoding_kind", "family_of", "from_state", "hf_config"]
