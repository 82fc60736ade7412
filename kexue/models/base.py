"""The Transformer skeleton every family shares, after bert4keras's ``Transformer``.

A forward pass is ``apply_embeddings -> apply_main_layers -> apply_final_layers``; a family
subclass only says how each stage is built; its weight names map to the HF layout through
``weight_map()`` (:mod:`kexue.models.weights`). What a model is built for (application, heads,
conditional LayerNorm, ...) is its :class:`~kexue.models.config.Options`, saved in config.json.
``application`` picks the attention mask: ``encoder`` (bidirectional), ``lm`` (causal) or ``unilm``
(prefix; see :mod:`kexue.layers.masks`).

Two training-time services every family shares (:class:`Blocks`, T5 included): **recompute** (gradient
checkpointing, bert4keras's ``RECOMPUTE=1``): with ``model.recompute = True`` (:func:`set_recompute`) each block
call in training keeps only its input and recomputes its activations during the backward pass
(``torch.utils.checkpoint``, non-reentrant, the RNG state replayed so dropout draws the same masks): the
activation memory of the stack falls from O(layers) blocks to about one block's, for one more forward pass of
compute; the gradients are those of the plain model. Cached decoding, evaluation (``eval()``) and
``torch.no_grad`` are untouched. **Layer depths** (:meth:`Blocks.layer_depths`): each parameter's depth,
0 for the embeddings, i for block i (1-based), L+1 above the blocks, which layer-wise learning-rate decay
(:func:`kexue.optim.param_groups.layerwise_lr_groups`) reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import re

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kexue.layers import KVCache, build_mask
from kexue.models.config import Options, TransformerConfig


@dataclass
class TransformerOutput:
    hidden: Tensor  # [B, L, hidden] last layer
    pooled: Tensor | None = None  # [B, hidden] pooler output ([CLS] -> dense -> tanh), if built
    logits: Tensor | None = None  # [B, L, vocab] MLM / LM logits, if built ([B, L]: ELECTRA's discriminator)
    all_hidden: list[Tensor] | None = None  # embeddings + every layer, if asked for


def tracing() -> bool:
    """True under torch.compile / torch.export: value checks (which read tensor data) are skipped there."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def check_ids(name: str, ids: Tensor, upper: int, what: str) -> None:
    """Refuse ids outside [0, upper) with a ValueError naming the input (skipped while tracing)."""
    if ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name} must hold integers, got dtype {ids.dtype}")
    if tracing() or not ids.numel():
        return
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()  # one device sync
    if lo < 0:
        raise ValueError(f"{name} holds a negative id ({lo})")
    if hi >= upper:
        raise ValueError(f"{name} holds id {hi}, outside {what}")


class Blocks:
    """Mixin of every model class: :attr:`recompute` and :meth:`block` (the one place a block is called), and
    :meth:`layer_depths` (module doc)."""

    recompute: bool = False
    block_lists: tuple[str, ...] = ("layers",)  # ModuleLists of blocks, in depth order
    embedding_modules: tuple[str, ...] = ("embeddings",)  # submodules at depth 0

    def block(self, layer: nn.Module, *args, cached: bool = False, **kwargs):
        """``layer(*args, **kwargs)``; checkpointed when ``recompute`` is on, the model trains, gradients are
        recorded and no KV cache is being filled (``cached``)."""
        if self.recompute and self.training and not cached and torch.is_grad_enabled() and not tracing():
            return checkpoint(layer, *args, use_reentrant=False, **kwargs)
        return layer(*args, **kwargs)

    def block_depth(self, name: str) -> int | None:
        """The depth of a parameter (named within this model) that belongs to a block, else None."""
        offset = 0
        for attr in self.block_lists:
            layers = getattr(self, attr, None)
            if layers is None:
                continue
            m = re.match(rf"{re.escape(attr)}\.(\d+)\.", name)
            if m:
                return offset + int(m.group(1)) + 1
            offset += len(layers)
        return None

    def num_blocks(self) -> int:
        """L: the number of block depths."""
        return sum(len(getattr(self, attr)) for attr in self.block_lists if getattr(self, attr, None) is not None)

    def layer_depths(self) -> tuple[dict[str, int], int]:
        """``({parameter name: depth}, L)``: 0 for the ``embedding_modules``, i (1-based) for block i, L + 1 for
        the rest (final norms, pooler, MLM / LM head). A tied head shares the embedding's parameter (depth 0)."""
        depths, top = {}, self.num_blocks()
        for name, _ in self.named_parameters():
            d = self.block_depth(name)
            if d is None:
                d = 0 if name.split(".", 1)[0] in self.embedding_modules else top + 1
            depths[name] = d
        return depths, top


def set_recompute(module: nn.Module, on: bool = True) -> int:
    """Turn gradient checkpointing per block on (or off) in every model inside ``module`` (e.g. a task model
    wrapping a backbone); returns how many models it reached (ValueError when none)."""
    models = [m for m in module.modules() if isinstance(m, Blocks)]
    if not models:
        raise ValueError(f"recompute: {type(module).__name__} holds no kexue Transformer whose blocks it could "
                         "checkpoint")
    for m in models:
        m.recompute = bool(on)
    return len(models)


class Transformer(Blocks, nn.Module):
    family: str = ""
    hf_architectures: tuple[str, str] = ("", "")  # HF class names: bare model, with the MLM / LM head
    default_application = "encoder"
    # what the family's kexue block may say (Options.check_family): its applications, and the option keys
    # it reads and writes (the others stay at their defaults)
    applications: tuple[str, ...] = ("encoder", "lm", "unilm")
    option_keys: tuple[str, ...] = ("with_pool", "with_mlm", "cond_dim", "cond_hidden", "cond_hidden_act",
                                    "hierarchical_alpha", "entropy_train_len", "rope_tie", "pool_act")
    has_pooler = False  # builds the [CLS] pooler for with_pool
    conditional_norm = True  # its norms have a gain and bias that Conditional LayerNorm can condition

    @classmethod
    def uses_rope(cls, options: Options) -> bool:
        """Whether positions enter through RoPE (no learned table) for these options."""
        return False

    @classmethod
    def check_options(cls, options: Options, path=None) -> None:
        """The family's rules for its kexue block, on top of :meth:`Options.validate` (errors name ``path``)."""
        options.check_family(cls.family, cls.applications, cls.option_keys, path)
        rope = cls.uses_rope(options)
        if options.hierarchical_alpha is not None and rope:
            options.refuse("hierarchical_alpha", f"needs learned positions; {cls.family} uses RoPE", path)
        if options.rope_tie and not rope:
            options.refuse("rope_tie", f"needs a RoPE model (roformer, roformer_v2, or gpt with rope=True); "
                           f"{cls.family} has no RoPE", path)
        if options.cond_dim is not None and not cls.conditional_norm:
            options.refuse("cond_dim", f"is not available: {cls.family}'s norms have no gain or bias to condition", path)
        if options.with_pool and not cls.has_pooler:
            options.refuse("with_pool", f"is not available: {cls.family} has no pooler", path)

    def __init__(self, config: TransformerConfig, application: str | None = None, options: Options | None = None,
                 **kwargs):
        super().__init__()
        if options is None:
            options = Options(family=self.family, application=application or self.default_application, **kwargs)
        elif application is not None or kwargs:
            raise TypeError("pass either options= or the option keywords, not both")
        if options.application in ("lm", "unilm"):
            options.with_mlm = True  # a language model always has its output head
        options.validate()
        type(self).check_options(options)
        config.validate()
        self.config, self.options = config, options
        self.build()

    @property
    def application(self) -> str:
        return self.options.application

    @property
    def with_pool(self) -> bool:
        return self.options.with_pool

    @property
    def with_mlm(self) -> bool:
        return self.options.with_mlm

    @property
    def cond_dim(self) -> int | None:
        return self.options.cond_dim

    # -- construction, per family ---------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def norm_kwargs(self) -> dict:
        """Conditional LayerNorm settings for every norm of the model."""
        o = self.options
        return dict(cond_dim=o.cond_dim, cond_hidden=o.cond_hidden, cond_hidden_act=o.cond_hidden_act)

    # -- forward -----------------------------------------------------------------------------------
    def check_inputs(self, input_ids: Tensor, segment_ids: Tensor | None, attention_mask: Tensor | None,
                     position_ids: Tensor | None, cond: Tensor | None, past: int) -> None:
        """Shapes must agree exactly (nothing is broadcast silently) and ids must be in range."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {list(input_ids.shape)}")
        b, l = input_ids.shape
        check_ids("input_ids", input_ids, self.config.vocab_size,
                  f"the model's vocab_size={self.config.vocab_size}: the tokenizer's vocabulary does not match "
                  "the model config")
        if segment_ids is not None:
            if segment_ids.shape != input_ids.shape:
                raise ValueError(f"segment_ids shape {list(segment_ids.shape)} != input_ids shape {[b, l]}")
            n = self.segment_vocab_size()
            if n:
                check_ids("segment_ids", segment_ids, n, f"type_vocab_size={n}")
            elif self.application == "unilm":  # no token-type table: segment ids only shape the UniLM mask
                check_ids("segment_ids", segment_ids, 2, "0 (source) / 1 (target)")
            else:  # all-zero ids mean "no types"; anything else would be ignored
                check_ids("segment_ids", segment_ids, 1, "type_vocab_size=0 (the model has no token-type embeddings)")
        if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape[0] != b
                                           or attention_mask.shape[1] != past + l):
            raise ValueError(f"attention_mask shape {list(attention_mask.shape)} != [batch, cached + new] = "
                             f"{[b, past + l]}")
        if position_ids is not None:
            if position_ids.dim() == 1:
                position_ids = position_ids[None]
            axes = getattr(getattr(self, "rotary", None), "axes", None)  # RoPE-Tie: [B, L, axes] positions
            shape_ok = position_ids.dim() == 2 or (axes is not None and position_ids.dim() == 3
                                                   and position_ids.shape[2] == axes)
            if not shape_ok or position_ids.shape[1] != l or position_ids.shape[0] not in (1, b):
                tie = f" or [{b}, {l}, {axes}] (RoPE-Tie)" if axes else ""
                raise ValueError(f"position_ids shape {list(position_ids.shape)} must be [{l}], [1, {l}] or "
                                 f"[{b}, {l}]{tie}")
            check_ids("position_ids", position_ids, 1 << 62, "the int64 range")
        if cond is not None:
            if self.cond_dim is None:
                raise ValueError("cond was given but the model has no Conditional LayerNorm (kexue.cond_dim is unset)")
            if cond.dim() not in (2, 3) or cond.shape[0] != b or cond.shape[-1] != self.cond_dim \
                    or (cond.dim() == 3 and cond.shape[1] != l):
                raise ValueError(f"cond shape {list(cond.shape)} must be [{b}, {self.cond_dim}] or "
                                 f"[{b}, {l}, {self.cond_dim}]")

    def segment_vocab_size(self) -> int:
        return self.config.type_vocab_size

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, cond: Tensor | None = None, cache: KVCache | None = None,
                output_hidden_states: bool = False, key_segment_ids: Tensor | None = None,
                logits_mask: Tensor | None = None) -> TransformerOutput:
        """``input_ids [B, L]``; ``segment_ids`` token types (source/target for UniLM);
        ``attention_mask [B, K]`` 1 for real tokens, K = cached + new; ``cond [B, cond_dim]`` for
        Conditional LayerNorm; ``cache`` for incremental decoding (new tokens only in input_ids);
        ``key_segment_ids [B, K]``: UniLM with a cache, the segment ids of every key (the decoding
        state keeps this history; the cache holds keys and values only).
        ``logits_mask [B, L]`` (bool): compute the MLM / LM logits only where it is True; ``logits`` is then
        ``[N, vocab]`` for the N selected positions in row-major order (``logits_full[logits_mask]``). A
        masked-LM loss needs the ~15 % masked positions only: the vocabulary projection, the largest single
        matrix product of a small model, shrinks by the same factor (BERT's own ``masked_lm_positions``)."""
        past = cache.length if cache is not None else 0
        self.check_inputs(input_ids, segment_ids, attention_mask, position_ids, cond, past)
        if logits_mask is not None and not tracing():
            if logits_mask.dtype != torch.bool or logits_mask.shape != input_ids.shape:
                raise ValueError(f"logits_mask must be a bool tensor shaped like input_ids {list(input_ids.shape)}, "
                                 f"got {logits_mask.dtype} {list(logits_mask.shape)}")
            if cond is not None:
                raise ValueError("logits_mask together with cond (Conditional LayerNorm) is not implemented")
        q_len = input_ids.shape[1]
        if not tracing():
            # the positions this call looks up: cached tokens count too, so decoding past the table is refused
            needed = past + q_len if position_ids is None or not position_ids.numel() else int(position_ids.max()) + 1
            if needed > self.max_positions():
                raise ValueError(
                    f"input of {needed} tokens exceeds the model's {self.max_positions()} positions; "
                    "truncate it (Tokenizer.encode(..., maxlen=...)) or generate fewer tokens"
                )
        if position_ids is None:
            position_ids = torch.arange(past, past + q_len, device=input_ids.device)[None]
        elif position_ids.dim() == 1:
            position_ids = position_ids[None]
        mask_segments = segment_ids if segment_ids is not None else torch.zeros_like(input_ids)
        if key_segment_ids is not None:  # UniLM with a cache: the decoding state's segment history
            mask_segments = key_segment_ids
        mask = build_mask(self.application, attention_mask, mask_segments, q_len, past + q_len, input_ids.device)
        x = self.apply_embeddings(input_ids, segment_ids, position_ids, cond)
        hidden = [x] if output_hidden_states else None
        x = self.apply_main_layers(x, mask, position_ids, cond, cache, hidden)
        out = self.apply_final_layers(x, cond, logits_mask)
        out.all_hidden = hidden
        return out

    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    def apply_embeddings(self, input_ids, segment_ids, position_ids, cond) -> Tensor:
        raise NotImplementedError

    def layer_extras(self, position_ids: Tensor) -> dict:
        """Per-forward arguments every layer receives (e.g. RoPE cos/sin)."""
        return {}

    def apply_main_layers(self, x, mask, position_ids, cond, cache, hidden) -> Tensor:
        extras = self.layer_extras(position_ids)
        for layer in self.layers:
            x = self.block(layer, x, mask, cond=cond, cache=cache, cached=cache is not None, **extras)
            if hidden is not None:
                hidden.append(x)
        return x

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        raise NotImplementedError
