"""bert4keras's ``keep_tokens`` and ``compound_tokens``: a model with a smaller (or extended) vocabulary.

Applied exactly as bert4keras's ``Transformer.load_embeddings`` applies them to every vocabulary-indexed
tensor of a checkpoint (token embeddings, the MLM bias, an untied decoder / T5's ``decoder/logits``):

    W' = W[keep_tokens]                                      (rows gathered, in keep_tokens' order)
    W' = [W'; average(W'[ids_j], weights_j) for each compound token j]   (computed in float64, then cast)

so row i of the new table is old row ``keep_tokens[i]``, and compound token j (id ``len(keep_tokens) + j``)
starts as the weighted mean of the kept rows it names (its ids index the *kept* table, as in bert4keras;
weights 1 when none are given). The vocabulary shrinks to the tokens a task needs (bert4keras's
``load_vocab(simplified=True)``) or gains new words initialised from their characters.

The lists come as JSON files: ``keep_tokens`` a list of ids; ``compound_tokens`` a list whose items are a
list of ids (equal weights) or ``{"ids": [...], "weights": [...], "token": "..."}`` (``token``: its
spelling in the written vocabulary; by default its parts' tokens joined, ``##`` dropped).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

# kexue names of vocabulary-indexed tensors (rows = token ids), whatever the family
VOCAB_ROWS = (r"(.+\.)?token\.weight", r"shared\.weight", r"mlm\.(weight|bias)", r"lm_head\.weight")
# config fields holding token ids: remapped into the new vocabulary
TOKEN_ID_FIELDS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id")


@dataclass(frozen=True)
class Compound:
    ids: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    token: str | None = None


def _ints(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ValueError(f"{what} must be a list of integer token ids, got {value!r}"[:300])
    return value


def parse_keep_tokens(value, where: str = "keep_tokens") -> list[int]:
    keep = _ints(value, where)
    if not keep:
        raise ValueError(f"{where} is empty")
    seen: dict[int, int] = {}
    for pos, i in enumerate(keep):
        if i in seen:
            raise ValueError(f"{where}: id {i} is kept twice (positions {seen[i]} and {pos})")
        seen[i] = pos
    return keep


def parse_compound_tokens(value, where: str = "compound_tokens") -> list[Compound]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list, got {type(value).__name__}")
    out = []
    for j, item in enumerate(value):
        what = f"{where} item {j}"
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"ids", "weights", "token"})
            if unknown:
                raise ValueError(f"{what}: unknown key(s) {unknown} (known: ids, weights, token)")
            ids, weights, token = _ints(item.get("ids"), f"{what} field 'ids'"), item.get("weights"), item.get("token")
            if weights is not None:
                if not isinstance(weights, list) or len(weights) != len(ids) or not all(
                        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
                    raise ValueError(f"{what} field 'weights' must be {len(ids)} numbers, got {weights!r}")
                if sum(weights) == 0:
                    raise ValueError(f"{what}: its weights sum to zero")
                weights = tuple(float(w) for w in weights)
            if token is not None and (not isinstance(token, str) or not token or token != token.strip()):
                raise ValueError(f"{what} field 'token' must be a non-empty token string, got {token!r}")
        else:
            ids, weights, token = _ints(item, what), None, None
        if not ids:
            raise ValueError(f"{what} names no token")
        out.append(Compound(tuple(ids), weights, token))
    return out


def read_token_list(path: str | Path, kind: str):
    """``keep_tokens`` / ``compound_tokens`` read from a JSON file (errors name the file)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{kind} file {path} cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{kind} file {path} is not valid JSON: {e}") from None
    parse = parse_keep_tokens if kind == "keep_tokens" else parse_compound_tokens
    return parse(value, f"{kind} file {path}")


def check_lists(keep: Sequence[int] | None, compound: Sequence[Compound] | None, vocab_size: int) -> int:
    """The new vocabulary size; ids out of range are refused (keep ids < vocab_size, compound ids < kept size)."""
    if keep is not None:
        bad = [i for i in keep if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(f"keep_tokens: id {bad[0]} is outside the checkpoint's vocabulary [0, {vocab_size})")
    base = len(keep) if keep is not None else vocab_size
    for j, c in enumerate(compound or ()):
        bad = [i for i in c.ids if not 0 <= i < base]
        if bad:
            raise ValueError(f"compound_tokens item {j}: id {bad[0]} is outside the "
                             f"{'kept ' if keep is not None else ''}vocabulary [0, {base})")
    return base + len(compound or ())


def trim_rows(t: Tensor, keep: Sequence[int] | None, compound: Sequence[Compound] | None) -> Tensor:
    """bert4keras's ``load_embeddings`` on one tensor whose first axis is the vocabulary."""
    a = t.detach().cpu().numpy()
    if keep is not None:
        a = a[list(keep)]
    if compound:
        extra = [np.average(a[list(c.ids)].astype(np.float64), 0, c.weights or [1] * len(c.ids)) for c in compound]
        a = np.concatenate([a, np.stack(extra).astype(a.dtype)], 0)
    return torch.from_numpy(np.ascontiguousarray(a)).to(t.dtype)


def trim_tokens(tokens: Sequence[str], keep: Sequence[int] | None, compound: Sequence[Compound] | None) -> list[str]:
    """The vocabulary of the trimmed model: kept tokens, then each compound token's spelling; a repeated
    token is refused (it would make two ids one)."""
    if keep is not None and max(keep) >= len(tokens):
        raise ValueError(f"keep_tokens: id {max(keep)} is past the vocabulary's {len(tokens)} tokens")
    kept = [tokens[i] for i in keep] if keep is not None else list(tokens)
    out = list(kept)
    for j, c in enumerate(compound or ()):
        out.append(c.token or "".join(kept[i][2:] if kept[i].startswith("##") else kept[i] for i in c.ids))
    seen: dict[str, int] = {}
    for i, tok in enumerate(out):
        if tok in seen:
            raise ValueError(f"the trimmed vocabulary holds {tok!r} twice (ids {seen[tok]} and {i}); give the compound "
                             "token its own spelling ({\"ids\": [...], \"token\": \"...\"})")
        seen[tok] = i
    return out


def trim_model(model: nn.Module, keep: Sequence[int] | None, compound: Sequence[Compound] | None,
               build: Callable[[Any, Any], nn.Module]) -> nn.Module:
    """A new model of ``model``'s family (``build(config, options)``) with the vocabulary of ``keep`` /
    ``compound``: every vocabulary-indexed tensor trimmed (:data:`VOCAB_ROWS`), the rest copied, the
    config's token ids (pad, eos, bos, decoder start) moved to their new ids (a token id not kept is refused)."""
    config = model.config
    n = check_lists(keep, compound, config.vocab_size)
    changes: dict[str, Any] = {"vocab_size": n}
    for name in TOKEN_ID_FIELDS:
        old = getattr(config, name, None)
        if old is None or keep is None:
            continue
        if old not in keep:
            raise ValueError(f"config field {name!r}={old}: token {old} is not in keep_tokens")
        changes[name] = list(keep).index(old)
    new_config = dataclasses.replace(config, **changes)
    state = {}
    for name, t in model.state_dict().items():
        if any(re.fullmatch(p, name) for p in VOCAB_ROWS):
            if t.shape[0] != config.vocab_size:
                raise ValueError(f"{name} has {t.shape[0]} rows, the config's vocab_size is {config.vocab_size}")
            t = trim_rows(t, keep, compound)
        state[name] = t
    new = build(new_config, dataclasses.replace(model.options))
    new.load_state_dict(state, strict=True)
    return new.train(model.training)


__all__ = ["Compound", "TOKEN_ID_FIELDS", "VOCAB_ROWS", "check_lists", "parse_compound_tokens", "parse_keep_tokens",
           "read_token_list", "trim_model", "trim_rows", "trim_tokens"]
