"""BERT, RoFormer (v1) and RoFormer-v2: post-norm encoders that differ only in position handling,
biases and the norm.

* BERT: learned absolute positions added to the embeddings.
* RoFormer (《Transformer升级之路：2、博采众长的旋转式位置编码》): no absolute positions; RoPE rotates
  q and k in every layer, so attention logits depend on relative position only.
* RoFormer-v2 (《RoFormerV2：自然语言理解的极限探索》): no biases anywhere, and every norm is the
  scale-free RMS form x / sqrt(mean(x²) + ε) with no gain; the MLM head is the tied embedding alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import FeedForward, LayerNorm, MultiHeadAttention, RMSNorm, TransformerBlock
from ..layers.embeddings import Embeddings
from ..layers.ffn import activation
from ..layers.positions import sinusoidal
from ..layers.rope_tie import rotary_for
from .base import Transformer, TransformerOutput

_NORM = r"(weight|bias|cond_\w+\.weight)"  # a norm's own tensors, conditional-LN ones included
_BERT_RULES = [
    (r"embeddings\.token\.weight", r"embeddings.word_embeddings.weight"),
    (r"embeddings\.segment\.weight", r"embeddings.token_type_embeddings.weight"),
    (r"embeddings\.position\.weight", r"embeddings.position_embeddings.weight"),
    (rf"embeddings\.norm\.{_NORM}", r"embeddings.LayerNorm.\1"),
    (r"embeddings\.project\.(weight|bias)", r"embeddings_project.\1"),
    (r"layers\.(\d+)\.attn\.q\.(weight|bias)", r"encoder.layer.\1.attention.self.query.\2"),
    (r"layers\.(\d+)\.attn\.k\.(weight|bias)", r"encoder.layer.\1.attention.self.key.\2"),
    (r"layers\.(\d+)\.attn\.v\.(weight|bias)", r"encoder.layer.\1.attention.self.value.\2"),
    (r"layers\.(\d+)\.attn\.o\.(weight|bias)", r"encoder.layer.\1.attention.output.dense.\2"),
    (rf"layers\.(\d+)\.attn_norm\.{_NORM}", r"encoder.layer.\1.attention.output.LayerNorm.\2"),
    (r"layers\.(\d+)\.ffn\.up\.(weight|bias)", r"encoder.layer.\1.intermediate.dense.\2"),
    (r"layers\.(\d+)\.ffn\.down\.(weight|bias)", r"encoder.layer.\1.output.dense.\2"),
    (rf"layers\.(\d+)\.ffn_norm\.{_NORM}", r"encoder.layer.\1.output.LayerNorm.\2"),
    (r"pooler\.(weight|bias)", r"pooler.dense.\1"),
    (r"mlm\.dense\.(weight|bias)", r"cls.predictions.transform.dense.\1"),
    (rf"mlm\.norm\.{_NORM}", r"cls.predictions.transform.LayerNorm.\1"),
    (r"mlm\.bias", r"cls.predictions.bias"),
]


class MLMHead(nn.Module):
    """logits = act-dense-norm(h) · Eᵀ + b, with E the (tied) token embedding matrix."""

    def __init__(self, hidden: int, dim: int, vocab_size: int, act: str, norm, bias: bool = True,
                 transform: bool = True):
        super().__init__()
        self.dense = nn.Linear(hidden, dim, bias=bias) if transform else None
        self.act = activation(act)
        self.norm = norm() if transform else None
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def forward(self, h: Tensor, embedding: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.dense is not None:
            h = self.norm(self.act(self.dense(h)), cond)
        return F.linear(h, embedding, self.bias)


class BERT(Transformer):
    family = "bert"
    hf_prefix = "bert."
    hf_rules = _BERT_RULES
    hf_optional = (r"pooler\..*", r"cls\..*")
    hf_architectures = ("BertModel", "BertForMaskedLM")
    bias = True
    learned_positions = True

    def norm_factory(self, dim: int):
        c = self.config
        return lambda: LayerNorm(dim, c.layer_norm_eps, cond_dim=self.cond_dim)

    def build(self) -> None:
        c = self.config
        if self.learned_positions and c.extra.get("rope_tie"):
            raise ValueError(f"config option rope_tie needs a RoPE model (roformer, roformer_v2, gpt with rope), "
                             f"not {self.family}")
        dim = c.embedding_size or c.hidden_size
        self.embeddings = Embeddings(
            c.vocab_size, dim, self.norm_factory(dim), c.type_vocab_size,
            c.max_position_embeddings if self.learned_positions else None, c.hidden_size,
            c.hidden_dropout_prob, c.pad_token_id, bias=self.bias,
        )
        self.layers = nn.ModuleList(self.build_layer(i) for i in range(c.num_hidden_layers))
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size, bias=self.bias) if self.with_pool else None
        self.mlm = self.build_mlm(dim) if self.with_mlm else None
        self.init_weights()

    def build_layer(self, i: int) -> TransformerBlock:
        c = self.config
        attn = MultiHeadAttention(c.hidden_size, c.num_attention_heads, bias=self.bias,
                                  dropout=c.attention_probs_dropout_prob, layer_idx=i)
        ffn = FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act, bias=self.bias)
        return TransformerBlock(attn, ffn, self.norm_factory(c.hidden_size), dropout=c.hidden_dropout_prob)

    def build_mlm(self, dim: int) -> MLMHead:
        c = self.config
        return MLMHead(c.hidden_size, dim, c.vocab_size, c.hidden_act, self.norm_factory(dim))

    def init_weights(self, std: float = 0.02) -> None:
        """N(0, 0.02) for dense and embedding weights, zero biases (BERT's initialisation); the
        conditional-LN projections stay zero so the layers start as plain LayerNorm."""
        for name, module in self.named_modules():
            if ".cond_" in name or name.startswith("cond_"):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        return self.embeddings(input_ids, segment_ids, position_ids, cond)

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None) -> TransformerOutput:
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        logits = self.mlm(x, self.embeddings.token.weight, cond) if self.mlm is not None else None
        return TransformerOutput(hidden=x, pooled=pooled, logits=logits)


class RoFormer(BERT):
    family = "roformer"
    hf_prefix = "roformer."
    hf_optional = (r"pooler\..*", r"cls\..*")
    hf_ignore = (r".*position_ids$", r"encoder\.embed_positions\.weight")
    hf_architectures = ("RoFormerModel", "RoFormerForMaskedLM")
    learned_positions = False

    def build(self) -> None:
        super().build()
        # rope_tie: position ids may also be [B, L, 2] / [B, L, 3] (RoPE-Tie; text-only stays RoPE-1D)
        self.rotary = rotary_for(self.config.head_dim, self.config.rope_base, True, self.config.extra.get("rope_tie"))

    def max_positions(self) -> int:
        return 1 << 30  # RoPE extrapolates; no table bounds the length

    def layer_extras(self, position_ids: Tensor) -> dict:
        cos, sin = self.rotary(position_ids)
        return {"rope": (self.rotary, cos, sin)}

    def hf_extra_tensors(self) -> dict[str, Tensor]:
        """HF RoFormer stores its sinusoidal table as a weight; write it so HF loads our files."""
        c = self.config
        return {"encoder.embed_positions.weight": sinusoidal(c.max_position_embeddings, c.head_dim)}


class RoFormerV2(RoFormer):
    family = "roformer_v2"
    hf_architectures = ("RoFormerV2Model", "RoFormerV2ForMaskedLM")  # kexue-only layout
    bias = False

    def norm_factory(self, dim: int):
        eps = self.config.layer_norm_eps
        return lambda: RMSNorm(dim, eps, affine=False)

    def build_mlm(self, dim: int) -> MLMHead:
        c = self.config
        return MLMHead(c.hidden_size, dim, c.vocab_size, c.hidden_act, None, bias=False, transform=False)
