"""T5 / T5 v1.1 / mT5 encoder-decoder (the backbone of T5 PEGASUS).

    enc = RMSNorm(Encoder(x; bias = B_bi[bucket(j - i)]))
    p(y_t | y_<t, x) = softmax(W · Decoder(y_<t, enc; bias = B_causal[bucket(j - i)]))

(《T5 PEGASUS：开源一个中文生成式预训练模型》, 《那个屠榜的T5模型，现在可以在中文上玩玩了》.)
Attention logits are *unscaled* (the 1/√d is folded into the initialisation); the relative-position
bias is computed by the first layer of each stack and shared by all its layers; norms are RMSNorm
without mean-centring, pre-norm. T5 v1.1 / mT5 use a gated-GELU FFN and an untied LM head; the
original T5 uses ReLU, ties the head to the embedding and rescales the decoder output by d^-1/2.

:meth:`T5.weight_map` names every tensor in the HF ``T5ForConditionalGeneration`` /
``MT5ForConditionalGeneration`` layout (both directions), :func:`bert4keras_rules` in bert4keras's
mesh-TF layout; ``build_model(checkpoint=DIR)`` loads a folder, ``save_pretrained`` writes one
transformers loads back. The family's tokenizer is T5 PEGASUS's word+char WordPiece
(:func:`t5_pegasus_tokenizer`; kexue reads no SentencePiece vocabulary).
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from kexue.layers import KVCache, MultiHeadAttention, RMSNorm, TransformerBlock, padding_mask

from kexue.layers import FeedForward
from kexue.models.base import Blocks, check_ids
from kexue.models.config import ACTIVATION_NAMES, Options, check_refused, check_type, refuse
from kexue.models.weights import Rule, WeightMap, load_state
from kexue.text.hf import load_tokenizer
from kexue.text.tokenizer import Tokenizer, jieba_words

REFUSED = {"is_decoder": (False, "a decoder-only T5 stack"), "use_bfloat16": (False, "bfloat16 computation"),
           "tie_encoder_decoder": (False, "tied encoder/decoder stacks"),
           "pruned_heads": ({}, "pruned attention heads")}


@dataclass
class T5Config:
    """HF ``T5Config`` / ``MT5Config`` field names. ``scale_decoder_outputs``: multiply the decoder output
    by d^-1/2 before the head (original T5; not v1.1 / mT5). ``tie_word_embeddings``: the LM head
    starts as the embedding; a checkpoint storing a different ``lm_head.weight`` unties it (HF 5)."""
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    scale_decoder_outputs: bool = False
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    model_type: str = "t5"
    extra: dict = field(default_factory=dict)  # fields that do not change the computation

    TYPES = {"vocab_size": "pos_int", "d_model": "pos_int", "d_kv": "pos_int", "d_ff": "pos_int",
             "num_layers": "pos_int", "num_decoder_layers": "opt_int", "num_heads": "pos_int",
             "relative_attention_num_buckets": "pos_int", "relative_attention_max_distance": "pos_int",
             "dropout_rate": "float", "layer_norm_epsilon": "float", "feed_forward_proj": "str",
             "tie_word_embeddings": "bool", "scale_decoder_outputs": "bool", "pad_token_id": "int",
             "eos_token_id": "int", "decoder_start_token_id": "int", "model_type": "str"}
    DERIVED = ("is_gated_act",)  # HF recomputes it from feed_forward_proj

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act(self) -> str:
        """HF's rule: ``dense_act_fn`` from config.json wins (bert4keras's T5 PEGASUS uses the erf GELU),
        else it follows ``feed_forward_proj``, whose "gated-gelu" means the tanh GELU."""
        if self.extra.get("dense_act_fn"):
            return self.extra["dense_act_fn"]
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    @classmethod
    def from_dict(cls, d: dict, path=None) -> "T5Config":
        """From an HF ``config.json`` dict, with transformers 5's rules: the original T5 rescales the
        decoder output unless the config says ``tie_word_embeddings: false`` (v1.1) or sets
        ``scale_decoder_outputs``; mT5 never rescales; the head is always declared tied (a stored
        ``lm_head.weight`` that differs from the embedding unties it when loading)."""
        d = {k: v for k, v in d.items() if k not in ("kexue", "architectures")}
        check_refused(d, REFUSED, path)
        mt5 = d.get("model_type") == "mt5"
        if mt5:
            d["scale_decoder_outputs"] = False
        elif "scale_decoder_outputs" not in d:
            d["scale_decoder_outputs"] = d.get("tie_word_embeddings") is not False
        d["tie_word_embeddings"] = True
        d.setdefault("feed_forward_proj", "gated-gelu" if mt5 else "relu")
        if d.get("eos_token_id") is None:
            d["eos_token_id"] = 1
        if isinstance(d.get("eos_token_id"), list):
            refuse("eos_token_id", d["eos_token_id"], "several end tokens", path)
        if d.get("decoder_start_token_id") is None:
            d["decoder_start_token_id"] = d.get("pad_token_id") or 0
        if d.get("pad_token_id") is None:
            d["pad_token_id"] = 0
        names = {f.name for f in fields(cls)} - {"extra"}
        for k in names & set(d):
            check_type(k, d[k], cls.TYPES[k], path)
        proj = d["feed_forward_proj"].split("-")
        if len(proj) > 2 or (len(proj) == 2 and proj[0] != "gated") or proj[-1] not in ACTIVATION_NAMES:
            refuse("feed_forward_proj", d["feed_forward_proj"], "use '<act>' or 'gated-<act>' with a known activation",
                   path)
        if d.get("dense_act_fn") is not None and d["dense_act_fn"] not in ACTIVATION_NAMES:
            refuse("dense_act_fn", d["dense_act_fn"], f"known activations: {sorted(ACTIVATION_NAMES)}", path)
        extra = {k: v for k, v in d.items() if k not in names and k not in cls.DERIVED}
        return cls(**{k: v for k, v in d.items() if k in names}, extra=extra)

    def to_hf(self) -> dict:
        """The ``config.json`` transformers reads back into the same computation."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        d.update(self.extra)
        d["tie_word_embeddings"] = True
        if self.model_type == "mt5":
            d.pop("scale_decoder_outputs")
        d["is_encoder_decoder"] = True
        return d


def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Tensor:
    """Mesh-TF bucketing of ``j - i``: half the buckets are exact offsets, the other half grow
    logarithmically up to ``max_distance``; a bidirectional stack splits buckets by sign."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(n < max_exact, n, large)


class RelativePositionBias(nn.Module):
    """Learned scalar bias per (bucket, head): returns ``[1, H, q_len, k_len]`` for queries at
    positions ``offset .. offset+q_len-1`` against keys ``0 .. k_len-1``, or ``[B, H, q_len, k_len]``
    against per-row key positions ``key_positions [B, k_len]``."""

    def __init__(self, config: T5Config, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.embedding = nn.Embedding(self.num_buckets, config.num_heads)

    def forward(self, q_len: int, k_len: int, offset: int = 0, key_positions: Tensor | None = None) -> Tensor:
        device = self.embedding.weight.device
        q = torch.arange(offset, offset + q_len, device=device)[:, None]
        if key_positions is not None:
            rel = key_positions[:, None, :] - q[None]  # [B, q, K]
            b = relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
            return self.embedding(b).permute(0, 3, 1, 2)
        k = torch.arange(k_len, device=device)[None, :]
        b = relative_position_bucket(k - q, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(b).permute(2, 0, 1).unsqueeze(0)


def _attention(config: T5Config, layer_idx: int) -> MultiHeadAttention:
    # scale=1.0: T5 does not divide the logits by √d.
    return MultiHeadAttention(config.d_model, config.num_heads, head_dim=config.d_kv, bias=False, scale=1.0,
                              dropout=config.dropout_rate, layer_idx=layer_idx)


def _ffn(config: T5Config):
    return FeedForward(config.d_model, config.d_ff, act=config.act, bias=False, gated=config.gated,
                       dropout=config.dropout_rate)


class T5DecoderLayer(nn.Module):
    """x += SelfAttn(N(x)) (causal, cached); x += CrossAttn(N(x), enc) (enc keys cached once); x += FFN(N(x))."""

    def __init__(self, config: T5Config, layer_idx: int):
        super().__init__()
        norm = lambda: RMSNorm(config.d_model, config.layer_norm_epsilon)  # noqa: E731
        self.self_attn, self.self_norm = _attention(config, layer_idx), norm()
        self.cross_attn, self.cross_norm = _attention(config, layer_idx), norm()
        self.ffn, self.ffn_norm = _ffn(config), norm()
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor, enc: Tensor, self_mask: Tensor | None, self_bias: Tensor,
                cross_mask: Tensor | None, cache: KVCache | None = None, cross_bias: Tensor | None = None) -> Tensor:
        x = x + self.dropout(self.self_attn(self.self_norm(x), self_mask, bias=self_bias, cache=cache))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), cross_mask, bias=cross_bias, context=enc,
                                             cache=cache))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class T5(Blocks, nn.Module):
    """Encoder-decoder with an LM head. ``encode`` once, then ``decode`` incrementally with a KVCache."""

    family = "t5"
    hf_prefix = ""
    default_application = "seq2seq"
    applications = ("seq2seq",)
    option_keys = ("cross_position_bias",)
    block_lists = ("encoder_layers", "decoder_layers")  # depth: the encoder's blocks, then the decoder's
    embedding_modules = ("shared", "encoder_bias", "decoder_bias")  # the token table and the position biases

    @classmethod
    def check_options(cls, options: Options, path=None) -> None:
        """T5's kexue block: application seq2seq; of the options only ``cross_position_bias``."""
        options.check_family(cls.family, cls.applications, cls.option_keys, path)

    @classmethod
    def parse_config(cls, d: dict, path: str | Path | None = None) -> T5Config:
        return T5Config.from_dict(d, path)

    def hf_config_fields(self) -> dict:
        """The HF fields of ``config.json`` (``model_type`` kexue_t5 with bert4keras's cross-attention bias,
        which transformers cannot compute)."""
        d = self.config.to_hf()
        if self.options.cross_position_bias:
            d["model_type"] = "kexue_t5"
        return d

    def __init__(self, config: T5Config, options: Options | None = None):
        super().__init__()
        self.options = options or Options(family="t5", application="seq2seq")
        self.options.validate()
        self.check_options(self.options)
        self.config = config
        d = config.d_model
        self.shared = nn.Embedding(config.vocab_size, d)
        self.dropout = nn.Dropout(config.dropout_rate)
        norm = lambda: RMSNorm(d, config.layer_norm_epsilon)  # noqa: E731
        self.encoder_bias = RelativePositionBias(config, bidirectional=True)
        self.encoder_layers = nn.ModuleList(
            TransformerBlock(_attention(config, i), _ffn(config), norm, pre_norm=True, dropout=config.dropout_rate)
            for i in range(config.num_layers)
        )
        self.encoder_norm = norm()
        self.decoder_bias = RelativePositionBias(config, bidirectional=False)
        self.decoder_layers = nn.ModuleList(T5DecoderLayer(config, i) for i in range(config.num_decoder_layers))
        self.decoder_norm = norm()
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    application = property(lambda self: self.options.application)
    hf_architectures = property(lambda self: ("MT5ForConditionalGeneration",) * 2 if self.config.model_type == "mt5"
                                else ("T5ForConditionalGeneration",) * 2)

    def check_inputs(self, name: str, ids: Tensor, mask: Tensor | None, past: int = 0) -> None:
        if ids.dim() != 2:
            raise ValueError(f"{name} must be [batch, length], got shape {list(ids.shape)}")
        check_ids(name, ids, self.config.vocab_size, f"the model's vocab_size={self.config.vocab_size}")
        if mask is not None and (mask.dim() != 2 or mask.shape[0] != ids.shape[0]
                                 or mask.shape[1] != past + ids.shape[1]):
            raise ValueError(f"the attention mask of {name} has shape {list(mask.shape)}, expected "
                             f"{[ids.shape[0], past + ids.shape[1]]}")

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``[B, L]`` ids -> ``[B, L, d]`` encoder states (padding keys masked by ``attention_mask``)."""
        self.check_inputs("input_ids", input_ids, attention_mask)
        x = self.dropout(self.shared(input_ids))
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        bias = self.encoder_bias(x.shape[1], x.shape[1])
        for layer in self.encoder_layers:
            x = self.block(layer, x, mask, bias=bias)
        return self.dropout(self.encoder_norm(x))

    def decode(self, decoder_input_ids: Tensor, encoder_hidden: Tensor, encoder_mask: Tensor | None = None,
               cache: KVCache | None = None, decoder_attention_mask: Tensor | None = None,
               position_bias: Tensor | None = None) -> Tensor:
        """Logits ``[B, T, V]`` for the new decoder tokens; with ``cache`` the past tokens are not re-run
        and the encoder keys/values are projected only on the first call. ``position_bias
        [1, H, T, past+T]``: the self-attention bias, if the caller sliced it from a table it keeps."""
        past = cache.length if cache is not None else 0
        self.check_inputs("decoder_input_ids", decoder_input_ids, decoder_attention_mask, past)
        if encoder_mask is not None and encoder_mask.shape != encoder_hidden.shape[:2]:
            raise ValueError(f"encoder attention mask shape {list(encoder_mask.shape)} != encoder states "
                             f"{list(encoder_hidden.shape[:2])}")
        t = decoder_input_ids.shape[1]
        x = self.dropout(self.shared(decoder_input_ids))
        bias = self.decoder_bias(t, past + t, offset=past) if position_bias is None else position_bias
        # The causal rule lives in the bias' bucket table only for keys <= query; mask the future.
        self_mask = None
        if t > 1:
            q = torch.arange(past, past + t, device=x.device)[:, None]
            self_mask = (torch.arange(past + t, device=x.device)[None, :] <= q)[None, None]
        if decoder_attention_mask is not None:
            pad = padding_mask(decoder_attention_mask)
            self_mask = pad if self_mask is None else self_mask & pad
        cross_mask = padding_mask(encoder_mask) if encoder_mask is not None else None
        cross_bias = None
        if self.options.cross_position_bias:  # bert4keras: the decoder's table, query i vs encoder key j
            # j counts the row's real encoder tokens, so a left-padded row gets the bias it has unpadded
            keys = None if encoder_mask is None else (encoder_mask.long().cumsum(1) - 1).clamp(min=0)
            cross_bias = self.decoder_bias(t, encoder_hidden.shape[1], offset=past, key_positions=keys)
        for layer in self.decoder_layers:
            x = self.block(layer, x, encoder_hidden, self_mask, bias, cross_mask, cache, cross_bias,
                           cached=cache is not None)
        x = self.dropout(self.decoder_norm(x))
        if self.config.scale_decoder_outputs:
            x = x * self.config.d_model ** -0.5
        return self.lm_head(x)

    def forward(self, input_ids: Tensor, decoder_input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Tensor:
        enc = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, enc, attention_mask, decoder_attention_mask=decoder_attention_mask)

    # -- weights ---------------------------------------------------------------------------------
    hf_head = ("lm_head.weight", "shared.weight")

    @property
    def tied(self) -> bool:
        return self.lm_head.weight is self.shared.weight

    def head_tied(self) -> bool:
        return self.tied

    def untie_head(self) -> None:
        """Give the LM head its own matrix (a checkpoint stores one that differs from the embedding)."""
        self.lm_head.weight = nn.Parameter(self.shared.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def weight_map(self) -> WeightMap:
        """``T5ForConditionalGeneration`` / ``MT5ForConditionalGeneration`` names."""
        ffn = {"up": "wi_1" if self.config.gated else "wi", "gate": "wi_0", "down": "wo"}
        rules = [Rule(r"shared\.weight", "shared.weight"), Rule(r"lm_head\.weight", "lm_head.weight")]
        for stack, layers in (("encoder", "encoder_layers"), ("decoder", "decoder_layers")):
            rules += [
                Rule(rf"{stack}_bias\.embedding\.weight",
                     f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                Rule(rf"{stack}_norm\.weight", f"{stack}.final_layer_norm.weight"),
            ]
            sub = ([("attn", "0.SelfAttention"), ("attn_norm", "0.layer_norm"), ("ffn", "1.DenseReluDense"),
                    ("ffn_norm", "1.layer_norm")] if stack == "encoder" else
                   [("self_attn", "0.SelfAttention"), ("self_norm", "0.layer_norm"), ("cross_attn", "1.EncDecAttention"),
                    ("cross_norm", "1.layer_norm"), ("ffn", "2.DenseReluDense"), ("ffn_norm", "2.layer_norm")])
            for ours, theirs in sub:
                if ours == "ffn":
                    for a, b in ffn.items():
                        rules.append(Rule(rf"{layers}\.(\d+)\.ffn\.{a}\.weight", rf"{stack}.block.\1.layer.{theirs}.{b}.weight"))
                elif ours.endswith("norm"):
                    rules.append(Rule(rf"{layers}\.(\d+)\.{ours}\.weight", rf"{stack}.block.\1.layer.{theirs}.weight"))
                else:
                    rules.append(Rule(rf"{layers}\.(\d+)\.{ours}\.([qkvo])\.weight",
                                      rf"{stack}.block.\1.layer.{theirs}.\2.weight"))
        must_equal = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
        if self.tied:
            must_equal["lm_head.weight"] = "shared.weight"
        return WeightMap(self, rules, must_equal=must_equal)

    def load_hf_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load HF-named tensors (strict), untying the head as transformers 5 does."""
        load_state(self, state)


def bert4keras_rules(model: str = "t5.1.1") -> list[tuple[str, str]]:
    """kexue T5 names -> mesh-TF T5 names as bert4keras writes them (``mt5.1.1``: ``rms_norm`` scopes)."""
    norm = "rms_norm" if model == "mt5.1.1" else "layer_norm"
    final = "final_layer_norm" if norm == "layer_norm" else "rms_norm"
    rules = [
        (r"shared\.weight", "shared/embedding"),
        (r"encoder_bias\.embedding\.weight", "encoder/block_000/layer_000/SelfAttention/relative_attention_bias"),
        (r"decoder_bias\.embedding\.weight", "decoder/block_000/layer_000/SelfAttention/relative_attention_bias"),
        (r"encoder_norm\.weight", f"encoder/{final}/scale"),
        (r"decoder_norm\.weight", f"decoder/{final}/scale"),
        (r"lm_head\.weight", "decoder/logits/kernel"),
    ]
    blocks = {"encoder_layers": [("attn", "layer_000/SelfAttention"), ("attn_norm", f"layer_000/{norm}"),
                                 ("ffn", "layer_001/DenseReluDense"), ("ffn_norm", f"layer_001/{norm}")],
              "decoder_layers": [("self_attn", "layer_000/SelfAttention"), ("self_norm", f"layer_000/{norm}"),
                                 ("cross_attn", "layer_001/EncDecAttention"), ("cross_norm", f"layer_001/{norm}"),
                                 ("ffn", "layer_002/DenseReluDense"), ("ffn_norm", f"layer_002/{norm}")]}
    for stack, parts in blocks.items():
        block = f"{stack.split('_')[0]}/block_{{0:03d}}"
        for ours, theirs in parts:
            if ours.endswith("norm"):
                rules.append((rf"{stack}\.(\d+)\.{ours}\.weight", f"{block}/{theirs}/scale"))
            elif ours == "ffn":
                for a, b in (("gate", "wi_0/kernel"), ("up", "wi_1/kernel"), ("down", "wo/kernel")):
                    rules.append((rf"{stack}\.(\d+)\.ffn\.{a}\.weight", f"{block}/{theirs}/{b}"))
            else:
                for p in "qkvo":
                    rules.append((rf"{stack}\.(\d+)\.{ours}\.{p}\.weight", f"{block}/{theirs}/{p}"))
    return rules


def t5_pegasus_tokenizer(vocab: str | Path | list[str], lowercase: bool = False) -> Tokenizer:
    """A :class:`Tokenizer` over ``vocab`` that keeps in-vocab jieba words whole (T5 PEGASUS)."""
    return Tokenizer(vocab, lowercase=lowercase, pre_tokenize=jieba_words)


def folder_tokenizer(directory: str | Path):
    """The T5 family's tokenizer of a model folder: T5 PEGASUS's word+char ``vocab.txt``, else the folder's
    ``tokenizer.json`` or SentencePiece ``spiece.model`` (T5, mT5; :func:`kexue.text.load_tokenizer`)."""
    if (Path(directory) / "vocab.txt").is_file():
        return t5_pegasus_tokenizer(Path(directory) / "vocab.txt")
    return load_tokenizer(directory)
