"""Building blocks shared by every model family."""
from kexue.layers.attention import KVCache, MultiHeadAttention
from kexue.layers.block import TransformerBlock
from kexue.layers.ffn import FeedForward, activation
from kexue.layers.masks import build_mask, causal_mask, padding_mask, unilm_mask
from kexue.layers.norms import LayerNorm, RMSNorm
from kexue.layers.positions import RotaryEmbedding, apply_rope_2d, entropy_invariant_scale, hierarchical_positions, rope_2d_positions, sinusoidal
from kexue.layers.rope_tie import RoPETie, patch_embeddings, rope_tie_positions

__all__ = [
    "KVCache", "MultiHeadAttention", "TransformerBlock", "FeedForward", "activation", "build_mask",
    "causal_mask", "padding_mask", "unilm_mask", "LayerNorm", "RMSNorm", "RotaryEmbedding",
    "apply_rope_2d", "entropy_invariant_scale", "hierarchical_positions", "rope_2d_positions", "sinusoidal",
    "RoPETie", "patch_embeddings", "rope_tie_positions",
]
