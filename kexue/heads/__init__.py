"""Task heads on top of a Transformer: GlobalPointer span scorers and a CRF tagger."""
from kexue.heads.crf import CRF
from kexue.heads.globalpointer import NEG_INF, EfficientGlobalPointer, GlobalPointer, decode_spans, mask_logits, span_mask

__all__ = ["CRF", "NEG_INF", "EfficientGlobalPointer", "GlobalPointer", "decode_spans", "mask_logits", "span_mask"]
