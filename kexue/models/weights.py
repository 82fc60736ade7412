"""One weight table per family, used in both directions: kexue names <-> the Hugging Face layout.

A :class:`Rule` pairs a kexue tensor name (a regular expression) with its HF name (a template,
``\\1`` for the groups) and a transform:

* ``copy``: the same tensor;
* ``conv1d``: GPT-2's ``Conv1D`` stores a weight as ``[in, out]``, ``nn.Linear`` as ``[out, in]``: transpose;
* ``qkv``: GPT-2 fuses the query, key and value projections into one ``c_attn`` (``[in, 3·out]``);
  the kexue q, k, v tensors are split from / concatenated into it (and transposed, as ``conv1d``).

:meth:`WeightMap.to_hf` writes a model's state in the HF layout, :meth:`WeightMap.from_hf` reads one
back and reports every missing, unexpected and mis-shaped tensor by its HF name. Tied output heads
follow transformers 5 (:func:`head_is_tied`).

Every strict load in kexue (HF folders, bert4keras TF checkpoints, partial loads under a recipe's extra
parts, a task folder's head) ends in one rule, :func:`check_fit`: a :class:`LoadReport` of missing,
unexpected and mis-shaped tensors, and one :class:`CheckpointError` naming them all. A family's names in
bert4keras checkpoints are its :class:`Bert4kerasNames`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message names every offending weight and ``report``
    (a :class:`LoadReport`, when the error comes from :func:`check_fit`) lists them."""

    def __init__(self, message: str, report: "LoadReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: str
    transform: str = "copy"  # copy | conv1d | qkv


@dataclass(frozen=True)
class Bert4kerasNames:
    """A family's tensors in bert4keras (TensorFlow) checkpoints, read by :mod:`kexue.models.bert4keras`.

    ``models``: the bert4keras ``model=`` names that convert into the family; ``rules(model)``: pairs
    (kexue name regex, TF variable template with ``{0}`` = the layer index); ``optional``: TF variables
    (regexes) a checkpoint may carry for heads the kexue model was built without. ``marks``: TF variables
    (regexes) and ``config_marks``: ``bert_config.json`` keys that only this family's checkpoints hold, so a
    checkpoint converted under another ``--model`` is refused with the reason (:meth:`identified_by`).
    A rule's TF side may be a tuple of templates: the first one the checkpoint holds is read."""
    models: tuple[str, ...]
    rules: Callable[[str], list[tuple[str, str | tuple[str, ...]]]]
    optional: tuple[str, ...] = ()
    marks: tuple[str, ...] = ()
    config_marks: tuple[str, ...] = ()

    def identified_by(self, config: dict, variables) -> str | None:
        """Why ``config`` (a bert4keras config dict) or ``variables`` (TF names) are this family's, or None."""
        keys = [k for k in self.config_marks if k in config]
        if keys:
            return f"its config holds {', '.join(map(repr, keys))}"
        hit = next((v for v in sorted(variables) if any(re.fullmatch(p, v) for p in self.marks)), None)
        return None if hit is None else f"it holds variable {hit!r}"


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @classmethod
    def compare(cls, expected: dict[str, Tensor], given: dict[str, Tensor]) -> "LoadReport":
        """Two state dicts under the same names: what ``given`` lacks, what it adds, which shapes differ."""
        return cls(missing=sorted(set(expected) - set(given)), unexpected=sorted(set(given) - set(expected)),
                   mismatched=[f"{k} checkpoint {list(given[k].shape)} vs model {list(t.shape)}"
                               for k, t in expected.items() if k in given and given[k].shape != t.shape])

    def __str__(self) -> str:
        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if names:
                parts.append(f"{label} ({len(names)}): " + ", ".join(names))
        return "; ".join(parts) or "all weights matched"


def head_is_tied(tie_word_embeddings: bool, state: dict[str, Tensor], head: str, embedding: str) -> bool:
    """transformers 5's rule for an output head declared tied to the embedding: it is tied unless the
    config says ``tie_word_embeddings: false`` or the checkpoint stores both tensors with different
    values (then each keeps its own; real T5 v1.1 / mT5 checkpoints are exactly this case)."""
    if not tie_word_embeddings:
        return False
    if head in state and embedding in state:
        a, b = state[head], state[embedding]
        return a.shape == b.shape and torch.equal(a, b)
    return True


def _canonical(name: str) -> str:
    # TF-era checkpoints call LayerNorm's parameters gamma / beta
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def _qkv_index(name: str) -> int:
    return "qkv".index(re.search(r"\.([qkv])\.\w+$", name).group(1))


class WeightMap:
    """The HF name of every tensor of one model instance (the rules depend on its config).

    ``prefix``: the backbone's prefix in HF head checkpoints (``bert.``, ``transformer.``); names
    matching ``head`` live outside it. ``ignore``: HF tensors never used (buffers, derived tables).
    ``optional``: heads a checkpoint may carry that this model was built without (skipped quietly).
    ``aliases``: HF name -> another HF name read when the first is absent and written as a copy
    (BERT's ``cls.predictions.decoder.bias`` / ``cls.predictions.bias``). ``must_equal``: tensors a
    checkpoint may repeat (T5's ``encoder.embed_tokens``) that must equal the one kexue uses.
    ``extras``: tensors HF expects that kexue computes (RoFormer's sinusoidal table).
    """

    def __init__(self, model: nn.Module, rules: list[Rule], prefix: str = "", head: tuple[str, ...] = (),
                 use_prefix: bool = False, ignore: tuple[str, ...] = (), optional: tuple[str, ...] = (),
                 aliases: dict[str, str] | None = None, must_equal: dict[str, str] | None = None,
                 extras: dict[str, Tensor] | None = None):
        self.model, self.prefix, self.head, self.use_prefix = model, prefix, head, use_prefix
        self.ignore, self.optional = ignore, optional
        self.aliases, self.must_equal, self.extras = aliases or {}, must_equal or {}, extras or {}
        self.plan: dict[str, tuple[list[str], str]] = {}  # HF name -> (kexue names, transform)
        seen: set[int] = set()
        for name, tensor in model.state_dict(keep_vars=True).items():
            if id(tensor) in seen:  # a tied parameter appears under two names: keep the first
                continue
            seen.add(id(tensor))
            for rule in rules:
                m = re.fullmatch(rule.ours, name)
                if m:
                    names, _ = self.plan.setdefault(m.expand(rule.theirs), ([], rule.transform))
                    names.append(name)
                    break
            else:
                raise KeyError(f"{type(model).__name__} has no HF name for tensor {name!r}")
        for hf, (names, transform) in self.plan.items():
            if transform == "qkv":
                names.sort(key=_qkv_index)

    # -- names -----------------------------------------------------------------------------------
    def _is_head(self, hf: str) -> bool:
        return any(re.match(p, hf) for p in self.head)

    def full_name(self, hf: str) -> str:
        return hf if not self.use_prefix or self._is_head(hf) else self.prefix + hf

    def short_name(self, hf: str) -> str:
        return _canonical(hf[len(self.prefix):] if self.prefix and hf.startswith(self.prefix) else hf)

    # -- kexue -> HF -----------------------------------------------------------------------------
    def to_hf(self, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The model's (or ``state``'s) tensors under their HF names, in HF shapes."""
        state = self.model.state_dict() if state is None else state
        out: dict[str, Tensor] = {}
        for hf, (names, transform) in self.plan.items():
            parts = [state[n] for n in names]
            if transform == "qkv":
                t = torch.cat([p.t() if p.dim() == 2 else p for p in parts], dim=-1)
            elif transform == "conv1d":
                t = parts[0].t() if parts[0].dim() == 2 else parts[0]
            else:
                t = parts[0]
            out[self.full_name(hf)] = t
            if hf in self.aliases:
                out[self.full_name(self.aliases[hf])] = t
        for hf, t in self.extras.items():
            out[self.full_name(hf)] = t
        return {k: v.detach().contiguous() for k, v in out.items()}

    @staticmethod
    def _hf_shape(parts: list[Tensor], transform: str) -> list[int]:
        """The shape the HF tensor must have to fill ``parts``."""
        if transform == "copy" or parts[0].dim() != 2:
            shape = list(parts[0].shape)
            return shape[:-1] + [shape[-1] * len(parts)]
        return [parts[0].shape[1], sum(p.shape[0] for p in parts)]

    # -- HF -> kexue -----------------------------------------------------------------------------
    def from_hf(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], LoadReport]:
        """HF-named tensors -> kexue-named ones, and the report of what did not fit."""
        state = {self.short_name(k): v for k, v in state.items()}
        own = self.model.state_dict()
        report, out, used = LoadReport(), {}, set()
        for hf, (names, transform) in self.plan.items():
            key = hf if hf in state else self.aliases.get(hf)
            if key not in state:
                report.missing.append(self.full_name(hf))
                continue
            used.add(key)
            t = state[key]
            if transform == "qkv":
                pieces = t.chunk(3, dim=-1) if t.shape[-1] % 3 == 0 else None
                pieces = [p.t() if p.dim() == 2 else p for p in pieces] if pieces else [t] * 3
            elif transform == "conv1d":
                pieces = [t.t() if t.dim() == 2 else t]
            else:
                pieces = [t]
            if any(p.shape != own[n].shape for n, p in zip(names, pieces)):
                want = self._hf_shape([own[n] for n in names], transform)
                report.mismatched.append(f"{self.full_name(hf)} checkpoint {list(t.shape)} vs model {want}")
                continue
            out.update((n, p.contiguous()) for n, p in zip(names, pieces))
        for hf, other in self.must_equal.items():
            if hf in state and other in state and not torch.equal(state[hf], state[other]):
                report.mismatched.append(f"{hf} differs from {other} (kexue ties them)")
            used.add(hf)
        quiet = self.ignore + self.optional
        for hf in state:
            if hf in used or hf in self.plan:
                continue
            if hf in self.aliases.values() or any(re.fullmatch(p, hf) for p in quiet):
                report.skipped.append(hf)
            else:
                report.unexpected.append(self.full_name(hf))
        return out, report


def check_fit(report: LoadReport, source: str, target: str, may_miss: str | None = None,
              hint: str = "") -> LoadReport:
    """The one strict-load rule: unless every tensor fits, raise one :class:`CheckpointError`
    ``"<source> does not fit <target><hint>: missing (n): ...; unexpected (n): ...; shape mismatch (n): ..."``.
    ``may_miss``: a regex of names that may be absent (a recipe's extra parts keep their fresh
    initialisation); nothing else is forgiven. Returns ``report`` when it fits."""
    fatal = LoadReport([m for m in report.missing if may_miss is None or not re.search(may_miss, m)],
                       list(report.unexpected), list(report.mismatched))
    if not fatal.ok:
        raise CheckpointError(f"{source} does not fit {target}{hint}: {fatal}", fatal)
    return report


def load_state(model: nn.Module, state: dict[str, Tensor], strict: bool = True, source: str = "") -> LoadReport:
    """Copy HF-named ``state`` into ``model`` through its weight map; with ``strict`` any missing,
    unexpected or mis-shaped tensor raises one :class:`CheckpointError` naming them all. A head the
    model ties to the embedding is untied first when ``state`` holds a different one (transformers 5)."""
    wm = model.weight_map()
    head = getattr(model, "hf_head", None)
    if head is not None and model.head_tied():
        short = {wm.short_name(k): v for k, v in state.items()}
        if not head_is_tied(True, short, *head):
            model.untie_head()
            wm = model.weight_map()
    ours, report = wm.from_hf(state)
    if strict:
        hint = ""
        if any(re.search(r"word_embeddings|wte\.|shared\.", m) for m in report.mismatched):
            hint = " (config.vocab_size does not match the checkpoint's vocabulary)"
        check_fit(report, f"checkpoint {source}" if source else "checkpoint", type(model).__name__, hint=hint)
    model.load_state_dict(ours, strict=False)
    return report
