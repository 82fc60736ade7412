"""Task heads on top of a Transformer: sentence pooling, GlobalPointer span scorers and a CRF tagger."""
from kexue.heads.crf import CRF
from kexue.heads.globalpointer import NEG_INF, EfficientGlobalPointer, GlobalPointer, decode_spans, mask_logits, span_mask
from kexue.heads.pooling import pool

__all__ = ["CRF", "NEG_INF", "EfficientGlobalPointer", "GlobalPointer", "decode_spans", "mask_logits", "pool", "span_mask"]
