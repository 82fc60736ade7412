"""Building blocks shared by every model family."""
from .attention import KVCache, MultiHeadAttention
from .block import TransformerBlock
from .ffn import FeedForward, activation
from .masks import build_mask, causal_mask, padding_mask, unilm_mask
from .norms import LayerNorm, RMSNorm
from .positions import (RotaryEmbedding, apply_rope_2d, entropy_invariant_scale, hierarchical_positions,
                        rope_2d_positions, sinusoidal)
from .rope_tie import RoPETie, patch_embeddings, rope_tie_positions

__all__ = [
    "KVCache", "MultiHeadAttention", "TransformerBlock", "FeedForward", "activation", "build_mask",
    "causal_mask", "padding_mask", "unilm_mask", "LayerNorm", "RMSNorm", "RotaryEmbedding",
    "apply_rope_2d", "entropy_invariant_scale", "hierarchical_positions", "rope_2d_positions", "sinusoidal",
    "RoPETie", "patch_embeddings", "rope_tie_positions",
]
