"""Decoding states: each request's per-row state behind one protocol, so every search works for every family.

    logits_t = f(prefix, y_<t)   computed incrementally:  prefill() -> logits_0,  step(y_t) -> logits_{t+1}

bert4keras's ``AutoRegressiveDecoder`` (《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》) re-ran the
whole prefix at every step. Here a state runs the prefix once and then feeds one token per step,
reusing cached keys/values. A state owns *everything* that is per row of the batch (token history,
segment ids, positions, padding mask, Conditional-LayerNorm vectors, banned ids, T5 encoder output and
position-bias table, the key/value cache), and ``reorder(index)`` selects rows of all of it at once:
beam search and ``n`` samples duplicate and permute rows, so anything per row left outside the state
would silently pair with the wrong row (or crash on a shape mismatch).

* :class:`PrefixDecoding`: a :class:`kexue.models.Transformer` with ``application="lm"`` (continue
  the prompt) or ``"unilm"`` (the prompt is the source; generated tokens get segment id 1).
* :class:`Seq2SeqDecoding`: T5 (encoder once; decoder from ``decoder_start_token_id``).
"""
from __future__ import annotations

import operator
from typing import Protocol, Sequence

import torch
from torch import Tensor

from kexue.layers import KVCache
from kexue.models import CAUSAL, ENCODER_DECODER, PREFIX, Transformer, decoding_kind


class DecodingState(Protocol):
    batch_size: int  # rows of the request (before beams / samples duplicate them)
    vocab_size: int

    def prefill(self) -> Tensor:
        """Run the prompt; logits ``[B, V]`` of the first new token."""

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row ``[B]``; logits ``[B, V]`` of the next one."""

    def reorder(self, index: Tensor) -> None:
        """Keep / duplicate / permute rows: row i becomes old row ``index[i]``."""


def _pick(t: Tensor | None, index: Tensor) -> Tensor | None:
    return None if t is None else t.index_select(0, index)


def _check_prompt(input_ids: Tensor, attention_mask: Tensor | None, segment_ids: Tensor | None) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a [batch, length] tensor, got {getattr(input_ids, 'shape', input_ids)!r}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is an empty prompt (shape {tuple(input_ids.shape)}): give at least one token")
    if int(input_ids.min()) < 0:
        raise ValueError(f"input_ids holds a negative token id ({int(input_ids.min())})")
    for name, t in (("attention_mask", attention_mask), ("segment_ids", segment_ids)):
        if t is not None and tuple(t.shape) != tuple(input_ids.shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}: they must match")
    if attention_mask is not None:
        empty = (attention_mask == 0).all(1).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"attention_mask: row(s) {empty} have no real token (empty prompt)")


def _check_cond(cond: Tensor | None, batch: int, model) -> Tensor | None:
    if cond is None:
        return None
    cond_dim = getattr(model, "cond_dim", None)
    if cond_dim is None:
        raise ValueError("cond was given but the model has no Conditional LayerNorm (build it with cond_dim=...)")
    if cond.dim() != 2 or cond.shape[0] != batch or cond.shape[1] != cond_dim:
        raise ValueError(f"cond must be [batch={batch}, cond_dim={cond_dim}], got {tuple(cond.shape)}")
    return cond


def banned_mask(banned_ids, batch: int, vocab: int, device) -> Tensor | None:
    """``banned_ids``: ids banned for every row, or one list per row -> bool ``[B, V]`` (True = banned)."""
    if banned_ids is None:
        return None
    rows = list(banned_ids)
    if rows and all(isinstance(r, (list, tuple)) or (isinstance(r, Tensor) and r.dim() == 1) for r in rows):
        if len(rows) != batch:
            raise ValueError(f"banned_ids has {len(rows)} per-row lists for a batch of {batch}")
    else:
        rows = [rows] * batch
    mask = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
    for i, ids in enumerate(rows):
        for t in ids:
            try:
                t = operator.index(t)  # ints, numpy / 0-d tensor integers
            except TypeError:
                t = None
            if t is None or not 0 <= t < vocab:
                raise ValueError(f"banned_ids: {ids!r} holds something that is not a token id in [0, {vocab})")
            mask[i, t] = True
    return mask


class _Banning:
    """Shared by the states: banned ids are a per-row ``[B, V]`` mask applied to every logits row."""

    banned: Tensor | None = None

    def _ban(self, logits: Tensor) -> Tensor:
        return logits if self.banned is None else logits.masked_fill(self.banned, float("-inf"))


class PrefixDecoding(_Banning):
    """LM / UniLM decoding. ``input_ids`` must be left-padded when rows differ in length
    (``attention_mask`` 0 on the left) so every row's next token sits in the same column; positions
    count each row's real tokens only, so a padded row sees the positions it was trained on.

    Per-row state: token / segment / position history, the padding mask, the UniLM key-segment history
    (for the prefix mask), ``cond [B, cond_dim]`` (Conditional LayerNorm), banned ids and the cache.
    ``new_segment`` overrides the segment id of generated tokens (default 1 for UniLM, 0 for LM).
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None = None,
                 segment_ids: Tensor | None = None, use_cache: bool = True, cond: Tensor | None = None,
                 banned_ids: Sequence[int] | Sequence[Sequence[int]] | None = None, new_segment: int | None = None):
        _check_prompt(input_ids, attention_mask, segment_ids)
        self.model, self.use_cache = model, use_cache
        self.unilm = model.application == "unilm"
        self.batch_size, self.vocab_size = input_ids.shape[0], model.config.vocab_size
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: skip building masks at every step
        if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("attention_mask: prefix decoding needs left padding (the last column must be real tokens)")
        self.ids, self.mask = input_ids, attention_mask
        # no segment ids unless given, UniLM, or a chosen new_segment (GPT-2 adds wte(token_type_ids)
        # whenever they are passed, so zeros would change its output)
        needs = segment_ids is not None or self.unilm or new_segment is not None
        self.segments = segment_ids if segment_ids is not None else torch.zeros_like(input_ids) if needs else None
        if attention_mask is not None:
            self.positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        else:
            self.positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
        self.cond = _check_cond(cond, self.batch_size, model)
        self.banned = banned_mask(banned_ids, self.batch_size, self.vocab_size, input_ids.device)
        self.new_segment_id = (1 if self.unilm else 0) if new_segment is None else new_segment

    def _run(self, ids, segments, positions, key_segments=None) -> Tensor:
        extra = {} if key_segments is None else {"key_segment_ids": key_segments}
        if self.cond is not None:  # only when given: a wrapper model may bind its own
            extra["cond"] = self.cond
        # Only the last position's logits are read: over a prompt (or an uncached prefix) the head runs on
        # that column alone, [B, V] instead of [B, L, V] (left padding keeps every row's last token there).
        last_only = self.cond is None and ids.shape[1] > 1 and isinstance(self.model, Transformer)
        if last_only:
            extra["logits_mask"] = torch.zeros_like(ids, dtype=torch.bool)
            extra["logits_mask"][:, -1] = True
        out = self.model(ids, segment_ids=segments, attention_mask=self.mask, position_ids=positions,
                         cache=self.cache, **extra)
        if out.logits is None:
            raise ValueError("decoding needs the model's LM head: build it with with_mlm=True")
        return self._ban(out.logits if last_only else out.logits[:, -1])

    def prefill(self) -> Tensor:
        self.cache = KVCache() if self.use_cache else None
        self.next_pos = self.positions[:, -1:] + 1
        self.new_segment = None if self.segments is None else torch.full_like(self.next_pos, self.new_segment_id)
        self.key_segments = self.segments  # UniLM's mask needs the segment id of every cached key
        return self._run(self.ids, self.segments, self.positions)

    def step(self, tokens: Tensor) -> Tensor:
        tokens = tokens[:, None]
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones_like(tokens)], 1)
        pos, self.next_pos = self.next_pos, self.next_pos + 1
        if self.cache is not None:
            if not self.unilm:  # a causal mask needs no segment history
                return self._run(tokens, self.new_segment, pos)
            self.key_segments = torch.cat([self.key_segments, self.new_segment], 1)
            return self._run(tokens, self.new_segment, pos, self.key_segments)
        self.ids = torch.cat([self.ids, tokens], 1)
        if self.segments is not None:
            self.segments = torch.cat([self.segments, self.new_segment], 1)
        self.positions = torch.cat([self.positions, pos], 1)
        return self._run(self.ids, self.segments, self.positions)

    def reorder(self, index: Tensor) -> None:
        for name in ("ids", "segments", "positions", "mask", "next_pos", "new_segment", "key_segments",
                     "cond", "banned"):
            setattr(self, name, _pick(getattr(self, name, None), index))
        if self.cache is not None:
            self.cache.reorder(index)

    @property
    def rows(self) -> int:
        """Rows decoded now (after beams / samples duplicated them, or :meth:`merge` joined states)."""
        return int(self.next_pos.shape[0]) if hasattr(self, "next_pos") else int(self.ids.shape[0])

    @classmethod
    def merge(cls, states: Sequence["PrefixDecoding"]) -> "PrefixDecoding":
        """One state holding the rows of every state, in order, so that one ``step`` feeds them all.

        Each state must be prefilled (or stepped) and not yet fed the token its last logits chose, on
        the same model. Histories of different lengths are left-padded to the longest, as a batch of
        prompts is: the padding mask hides the padded keys (0 in ``mask``, zeros in the key/value cache),
        and positions, segment ids, Conditional-LayerNorm vectors and banned ids stay each row's own, so
        a row's logits are those of its state decoded alone (up to float rounding). Serving uses it to
        let new requests join the rows being decoded between two steps."""
        states = list(states)
        if not states:
            raise ValueError("merge needs at least one decoding state")
        first = states[0]
        for i, s in enumerate(states):
            if not isinstance(s, PrefixDecoding):
                raise ValueError(f"states[{i}] is a {type(s).__name__}: only prefix decoding states merge")
            if not hasattr(s, "next_pos"):
                raise ValueError(f"states[{i}] has not been prefilled: merge joins states between steps")
            why = (s.model is not first.model and "another model") or \
                  (s.use_cache != first.use_cache and "use_cache differs") or \
                  ((s.segments is None) != (first.segments is None) and "segment ids in one state only") or \
                  ((s.cond is None) != (first.cond is None) and "cond in one state only")
            if why:
                raise ValueError(f"states[{i}] cannot merge with states[0]: {why}")
        if len(states) == 1:
            return first
        out = cls.__new__(cls)
        out.model, out.use_cache, out.unilm = first.model, first.use_cache, first.unilm
        out.vocab_size, out.new_segment_id = first.vocab_size, first.new_segment_id
        out.batch_size = sum(s.rows for s in states)
        dev = first.next_pos.device
        # the keys seen so far: the cache (or, without one, the whole history) of every row
        width = max(_keys(s) for s in states)
        masks = [s.mask if s.mask is not None else torch.ones(s.rows, _keys(s), dtype=torch.long, device=dev)
                 for s in states]
        out.mask = _left_cat(masks, width, 0)
        if bool(out.mask.all()):
            out.mask = None
        out.ids = _left_cat([s.ids for s in states], max(s.ids.shape[1] for s in states), 0)
        out.positions = _left_cat([s.positions for s in states], out.ids.shape[1], 0)
        out.segments = None if first.segments is None else _left_cat([s.segments for s in states], out.ids.shape[1], 0)
        out.next_pos = torch.cat([s.next_pos for s in states])
        out.new_segment = None if first.new_segment is None else torch.cat([s.new_segment for s in states])
        out.key_segments = None if first.key_segments is None else \
            _left_cat([s.key_segments for s in states], width, 0)
        out.cond = None if first.cond is None else torch.cat([s.cond for s in states])
        if all(s.banned is None for s in states):
            out.banned = None
        else:
            out.banned = torch.cat([s.banned if s.banned is not None else
                                    torch.zeros(s.rows, s.vocab_size, dtype=torch.bool, device=dev) for s in states])
        out.cache = None
        if first.cache is not None:
            out.cache = KVCache()
            parts = [s.cache.tensors() for s in states]
            for layer in parts[0]:
                k = _left_cat([p[layer][0] for p in parts], width, 0, dim=2)
                v = _left_cat([p[layer][1] for p in parts], width, 0, dim=2)
                out.cache.update(layer, k, v)
        return out


def _keys(state: "PrefixDecoding") -> int:
    """How many keys the next step of ``state`` attends to, before its new token."""
    return state.cache.length if state.cache is not None else state.ids.shape[1]


def _left_cat(parts: list[Tensor], width: int, fill, dim: int = 1) -> Tensor:
    """Concatenate along dim 0, each part first left-padded with ``fill`` to ``width`` along ``dim``."""
    out = []
    for t in parts:
        short = width - t.shape[dim]
        if short:
            shape = list(t.shape)
            shape[dim] = short
            t = torch.cat([torch.full(shape, fill, dtype=t.dtype, device=t.device), t], dim)
        out.append(t)
    return torch.cat(out)


class Seq2SeqDecoding(_Banning):
    """T5: the encoder runs once; the decoder starts from ``decoder_start_token_id``.

    Per-row state: encoder output and mask, decoder tokens, banned ids and the cache (whose
    cross-attention keys/values are projected once). The decoder's relative-position bias table is
    computed once per request and sliced at every step (it is the same for every row).
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None = None, use_cache: bool = True,
                 banned_ids: Sequence[int] | Sequence[Sequence[int]] | None = None):
        _check_prompt(input_ids, attention_mask, None)
        self.model, self.input_ids, self.use_cache = model, input_ids, use_cache
        self.batch_size, self.vocab_size = input_ids.shape[0], model.config.vocab_size
        self.attention_mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask
        self.banned = banned_mask(banned_ids, self.batch_size, self.vocab_size, input_ids.device)
        self.bias_table: Tensor | None = None

    def _bias(self, past: int, t: int) -> Tensor:
        if self.bias_table is None or self.bias_table.shape[-1] < past + t:
            n = max(64, 2 * (past + t))  # grows geometrically: rebuilt O(log T) times per request
            self.bias_table = self.model.decoder_bias(n, n)
        return self.bias_table[:, :, past:past + t, :past + t]

    def _decode(self, tokens: Tensor) -> Tensor:
        past = self.cache.length if self.cache is not None else 0
        logits = self.model.decode(tokens, self.enc, self.attention_mask, self.cache,
                                   position_bias=self._bias(past, tokens.shape[1]))
        return self._ban(logits[:, -1])

    def prefill(self) -> Tensor:
        m = self.model
        self.enc = m.encode(self.input_ids, self.attention_mask)
        self.tokens = torch.full((self.input_ids.shape[0], 1), m.config.decoder_start_token_id,
                                 dtype=torch.long, device=self.input_ids.device)
        self.cache = KVCache() if self.use_cache else None
        return self._decode(self.tokens)

    def step(self, tokens: Tensor) -> Tensor:
        self.tokens = torch.cat([self.tokens, tokens[:, None]], 1)
        return self._decode(tokens[:, None] if self.cache is not None else self.tokens)

    def reorder(self, index: Tensor) -> None:
        for name in ("enc", "tokens", "attention_mask", "banned"):
            setattr(self, name, _pick(getattr(self, name), index))
        if self.cache is not None:
            self.cache.reorder(index)


T5Decoding = Seq2SeqDecoding  # the name earlier releases exported


def decoding_state(model, input_ids: Tensor, attention_mask: Tensor | None = None,
                   segment_ids: Tensor | None = None, use_cache: bool = True, cond: Tensor | None = None,
                   banned_ids: Sequence[int] | Sequence[Sequence[int]] | None = None) -> DecodingState:
    """The decoding state for ``model``, chosen by how its family record says it decodes
    (:func:`kexue.models.decoding_kind`): encoder-decoder (T5) or causal / prefix (a Transformer with
    application lm / unilm).

    ``cond [B, cond_dim]``: Conditional-LayerNorm vectors, one per row; ``banned_ids``: token ids never
    produced (one list for every row, or one list per row)."""
    kind = decoding_kind(model)
    if kind == ENCODER_DECODER:
        if segment_ids is not None:
            raise ValueError("segment_ids: T5 decoding has no segment ids")
        if cond is not None:
            raise ValueError("cond: T5 has no Conditional LayerNorm")
        return Seq2SeqDecoding(model, input_ids, attention_mask, use_cache, banned_ids)
    if kind not in (CAUSAL, PREFIX):
        raise ValueError("decoding needs a T5 model or a Transformer built with application='lm' or 'unilm'")
    return PrefixDecoding(model, input_ids, attention_mask, segment_ids, use_cache, cond, banned_ids)
