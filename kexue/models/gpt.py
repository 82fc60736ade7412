"""GPT-style causal language model (GPT-2 layout; learned positions or RoPE).

    p(x_t | x_<t) = softmax(E · N_f(Block_L(…Block_1(E[x] + P[t])…)))_t,   Block: x += Attn(N(x)); x += FFN(N(x))

A pre-norm decoder with a final norm and the LM head tied to the token embedding
(《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》: a language model is the Transformer with the
lower-triangular mask). For multi-turn dialogue (DialoGPT / CDial-GPT style) concatenate the turns
with a separator, give speakers different ``segment_ids`` (``type_vocab_size > 0``) and compute the
loss on the replies only (:func:`kexue.losses.seq2seq.seq2seq_loss` with a loss mask).

``config.extra["rope"] = True`` replaces the learned position table by RoPE in every layer;
``rope_tie = True`` on top lets position ids be 2-D (RoPE-Tie, :mod:`kexue.layers.rope_tie`).
GPT-2's checkpoints use ``Conv1D`` (weights stored ``[in, out]``) and a fused ``c_attn``;
:func:`convert_hf_gpt2` splits and transposes them.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import FeedForward, LayerNorm, MultiHeadAttention, TransformerBlock
from ..layers.rope_tie import rotary_for
from .base import Transformer, TransformerOutput
from .config import TransformerConfig


class GPT(Transformer):
    family = "gpt"

    def __init__(self, config: TransformerConfig, application: str = "lm", **kwargs):
        # A GPT is causal by construction; build_model's default "encoder" means "the usual one" here.
        super().__init__(config, "lm" if application == "encoder" else application, **kwargs)

    @property
    def rope(self) -> bool:
        return bool(self.config.extra.get("rope", False))

    def build(self) -> None:
        c = self.config
        d = c.hidden_size
        self.token = nn.Embedding(c.vocab_size, d)
        self.position = None if self.rope else nn.Embedding(c.max_position_embeddings, d)
        self.segment = nn.Embedding(c.type_vocab_size, d) if c.type_vocab_size else None
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        norm = lambda: LayerNorm(d, c.layer_norm_eps, cond_dim=self.cond_dim)  # noqa: E731
        self.layers = nn.ModuleList(
            TransformerBlock(
                MultiHeadAttention(d, c.num_attention_heads, dropout=c.attention_probs_dropout_prob, layer_idx=i),
                FeedForward(d, c.intermediate_size, c.hidden_act),
                norm, pre_norm=True, dropout=c.hidden_dropout_prob,
            )
            for i in range(c.num_hidden_layers)
        )
        self.final_norm = norm()
        if c.extra.get("rope_tie") and not self.rope:
            raise ValueError("config option rope_tie needs rope=True in a GPT (learned positions cannot be tied)")
        # rope_tie: position ids may also be [B, L, 2] / [B, L, 3] (RoPE-Tie; text-only stays RoPE-1D)
        self.rotary = rotary_for(c.head_dim, c.rope_base, False, c.extra.get("rope_tie")) if self.rope else None
        for module in self.modules():  # GPT-2's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    def max_positions(self) -> int:
        return 1 << 30 if self.rope else self.config.max_position_embeddings

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        x = self.token(input_ids)
        if self.position is not None:
            x = x + self.position(position_ids)
        if self.segment is not None and segment_ids is not None:
            x = x + self.segment(segment_ids)
        return self.dropout(x)

    def layer_extras(self, position_ids: Tensor) -> dict:
        if self.rotary is None:
            return {}
        cos, sin = self.rotary(position_ids)
        return {"rope": (self.rotary, cos, sin)}

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None) -> TransformerOutput:
        x = self.final_norm(x, cond)
        return TransformerOutput(hidden=x, logits=F.linear(x, self.token.weight))

    def hf_names(self) -> dict[str, str]:
        raise NotImplementedError("GPT-2 checkpoints fuse q/k/v; load them with GPT.from_hf_gpt2 / convert_hf_gpt2")

    @classmethod
    def from_hf_gpt2(cls, state_or_path: dict[str, Tensor] | str | Path, config: dict | None = None) -> "GPT":
        """Build from an HF GPT-2 state dict (with ``config`` as HF ``GPT2Config`` dict) or directory."""
        if not isinstance(state_or_path, dict):
            import json

            from ..checkpoints import read_state_dict
            path = Path(state_or_path)
            config = json.loads((path / "config.json").read_text())
            state_or_path = read_state_dict(path)
        model = cls(gpt2_config(config))
        missing, unexpected = model.load_state_dict(convert_hf_gpt2(state_or_path), strict=False)
        if missing or unexpected:
            raise KeyError(f"GPT-2 checkpoint mismatch: missing {missing}, unexpected {unexpected}")
        return model


def gpt2_config(hf: dict) -> TransformerConfig:
    """HF ``GPT2Config`` fields (n_embd, n_layer, n_head, n_inner, n_positions, ...) -> ours."""
    d = hf.get("n_embd", 768)
    return TransformerConfig(
        vocab_size=hf.get("vocab_size", 50257), hidden_size=d, num_hidden_layers=hf.get("n_layer", 12),
        num_attention_heads=hf.get("n_head", 12), intermediate_size=hf.get("n_inner") or 4 * d,
        hidden_act=hf.get("activation_function", "gelu_new"), max_position_embeddings=hf.get("n_positions", 1024),
        type_vocab_size=0, layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        hidden_dropout_prob=hf.get("resid_pdrop", 0.1), attention_probs_dropout_prob=hf.get("attn_pdrop", 0.1),
        model_type="gpt",
    )


_GPT2_RULES = [
    (r"wte\.weight", "token.weight"),
    (r"wpe\.weight", "position.weight"),
    (r"ln_f\.(weight|bias)", r"final_norm.\1"),
    (r"h\.(\d+)\.ln_1\.(weight|bias)", r"layers.\1.attn_norm.\2"),
    (r"h\.(\d+)\.ln_2\.(weight|bias)", r"layers.\1.ffn_norm.\2"),
    (r"h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"layers.\1.attn.o.\2"),
    (r"h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"layers.\1.ffn.up.\2"),
    (r"h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"layers.\1.ffn.down.\2"),
]


def convert_hf_gpt2(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF ``GPT2LMHeadModel`` / ``GPT2Model`` names -> ours: Conv1D weights are transposed, the fused
    ``c_attn`` ([d, 3d]) is split into q, k, v; ``lm_head`` is the tied embedding and dropped."""
    out = {}
    for name, t in state.items():
        name = name.removeprefix("transformer.")
        if name.startswith("lm_head.") or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        m = re.fullmatch(r"h\.(\d+)\.attn\.c_attn\.(weight|bias)", name)
        if m:
            i, kind = m.groups()
            parts = t.chunk(3, dim=-1)
            for p, part in zip("qkv", parts):
                out[f"layers.{i}.attn.{p}.{kind}"] = part.t().contiguous() if kind == "weight" else part
            continue
        for pattern, repl in _GPT2_RULES:
            new, n = re.subn("^" + pattern + "$", repl, name)
            if n:
                conv = ".c_" in name and name.endswith(".weight")  # Conv1D stores [in, out]
                out[new] = t.t().contiguous() if conv else t
                break
        else:
            raise KeyError(f"unknown GPT-2 tensor {name!r}")
    return out
