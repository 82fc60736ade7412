"""The generation options, in one place: :class:`GenerationOptions`.

    y_t = argmax / beam / sample of p(y_t | x, y_<t),   p = softmax(logits / T) restricted to top-k / top-p

Every option is one field of one frozen dataclass, and the field owns all there is to know about it:
its name, type and default, the check of its value (a one-line ``ValueError`` naming it), its help text,
the searches it applies to, and whether users set it from the command line (``kexue predict --top-k 8``)
and as a predictor's keyword option (``kexue.load(DIR).predict(inputs, top_k=8)``). ``generate``'s
keyword arguments, ``check_args`` of the searches, the command-line flags, the predictors' options and
``kexue serve``'s request options are all read from these fields.

The search is chosen by two fields: beam search if ``num_beams > 1``, sampling if ``do_sample``, else
greedy decoding; an option that the chosen search (and ``rule``) would ignore is refused by name. Greedy
decoding under ``rule="bert4keras"`` is bert4keras's ``beam_search(topk=1)``: its end-token rules
(``min_new_tokens`` does not forbid the end token, ``min_ends``), scores in float64.
Sampling and beam search follow HF ``generate`` (``rule="hf"``) or bert4keras's ``AutoRegressiveDecoder``
(``rule="bert4keras"``, 《如何应对Seq2Seq中的“根本停不下来”问题？》), see :mod:`kexue.generation.search`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

RULES = ("hf", "bert4keras")
SEARCHES = ("greedy decoding", "sampling", "beam search")
ALIASES = {"n": "num_samples", "num_return": "num_samples"}  # sample()'s and beam_search()'s own names


# --------------------------------------------------------------------------------------------------
# Checks of one value: each returns why the value is wrong, or None
# --------------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int, none: str | None = None) -> Callable[[Any], str | None]:
    def check(v):
        if none is not None and v is None:
            return None
        return None if _is_int(v) and v >= low else f"must be an int >= {low}" + (f" ({none})" if none else "")
    return check


def _positive_number(v) -> str | None:
    return None if _is_number(v) and v > 0 else "must be a finite number > 0"


def _finite_number(v) -> str | None:
    return None if _is_number(v) else "must be a finite number"


def _nucleus(v) -> str | None:
    return None if v is None or (_is_number(v) and 0 < v <= 1) else "must be in (0, 1]"


def _boolean(v) -> str | None:
    return None if isinstance(v, bool) else "must be True or False"


def _early_stopping(v) -> str | None:
    return None if isinstance(v, bool) or v == "never" else "must be True, False or 'never'"


def _rule(v) -> str | None:
    return None if v in RULES else f"must be one of {RULES}"


# Text -> value, for the command line and for predictor options that arrive as JSON / text.
def _text_bool(text: str) -> bool:
    low = text.strip().lower()
    if low not in ("true", "false", "1", "0"):
        raise ValueError
    return low in ("true", "1")


def _text_early_stopping(text: str) -> bool | str:
    return "never" if text.strip() == "never" else _text_bool(text)


def _text_float(text: str) -> float:
    return float(text)


_TEXT_KINDS = {int: "an integer", _text_float: "a number", _text_bool: "true or false",
               _text_early_stopping: "true, false or never", str: "text"}


def _option(default, help: str, check: Callable[[Any], str | None], parse: Callable[[str], Any],
            searches: tuple[str, ...] = ("*",), user: bool = False):
    """A field of :class:`GenerationOptions`. ``searches``: where it applies, ``"sampling"`` (any rule),
    ``"beam search:hf"`` (one rule) or ``"*"``; ``user``: a flag of ``kexue predict`` / ``chat`` and a
    keyword option of the predictors."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "parse": parse,
                                                        "searches": searches, "user": user})


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode: the search, its lengths and its sampling / beam settings (checked when built).

    ``GenerationOptions(num_beams=4, max_new_tokens=40)`` is what ``generate(model, ids, num_beams=4,
    max_new_tokens=40)`` uses; ``generate(model, ids, options=opts)`` takes one directly."""

    max_new_tokens: int = _option(32, "longest generation, in tokens", _int_at_least(0), int, user=True)
    min_new_tokens: int = _option(0, "the end token is not produced before this many tokens", _int_at_least(0), int)
    num_beams: int = _option(1, "beam search with this many beams (1: greedy decoding or sampling)",
                             _int_at_least(1), int, user=True)
    do_sample: bool = _option(False, "sample the next token instead of taking the most likely one", _boolean,
                              _text_bool)
    num_samples: int = _option(1, "generations per input (samples, or the best beams of beam search)",
                               _int_at_least(1), int, ("sampling", "beam search:hf"), user=True)
    temperature: float = _option(1.0, "sampling temperature T (softmax(logits / T))", _positive_number,
                                 _text_float, ("sampling", "beam search:bert4keras", "greedy decoding:bert4keras"),
                                 user=True)
    top_k: int | None = _option(None, "sample from the k most likely tokens (0: no top-k filter)",
                                _int_at_least(0, "0 or None: no top-k filter"), int, ("sampling",), user=True)
    top_p: float | None = _option(None, "nucleus sampling: the most likely tokens holding this probability mass",
                                  _nucleus, _text_float, ("sampling",), user=True)
    seed: int | None = _option(None, "seed of the sampler's own generator (same seed, same output)",
                               _int_at_least(0, "None: torch's global generator"), int, ("sampling",), user=True)
    length_penalty: float = _option(1.0, "beam score sum(log p) / length^length_penalty", _finite_number,
                                    _text_float, ("beam search:hf",))
    early_stopping: bool | str = _option(False, "beam search stops as soon as num_beams hypotheses ended (True), by "
                                         "HF's heuristic (False) or never", _early_stopping, _text_early_stopping,
                                         ("beam search:hf",))
    min_ends: int = _option(1, "a row stops at an end token once it holds this many", _int_at_least(1), int,
                            ("sampling:bert4keras", "beam search:bert4keras", "greedy decoding:bert4keras"))
    rule: str = _option("hf", f"stopping and scoring rule, one of {RULES}", _rule, str)

    def __post_init__(self):
        values = dataclasses.asdict(self)
        check_values(values)
        check_search(values)

    @property
    def search(self) -> str:
        """``"beam search"``, ``"sampling"`` or ``"greedy decoding"``."""
        return search_of(self.num_beams, self.do_sample)

    # -- the fields as data ---------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def user_options(cls) -> tuple[str, ...]:
        """The options users set: the flags of ``kexue predict`` / ``kexue chat`` and the keyword options of
        the predictors (each predictor takes those that apply to its task)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["user"])

    @classmethod
    def field(cls, name: str) -> dataclasses.Field:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f
        raise ValueError(f"{name}: not a generation option (options: {', '.join(cls.names())})")

    @classmethod
    def help(cls, name: str) -> str:
        return cls.field(name).metadata["help"]

    @classmethod
    def default(cls, name: str) -> Any:
        return cls.field(name).default

    @staticmethod
    def flag(name: str) -> str:
        """The command-line flag of an option: ``num_beams`` -> ``--num-beams``."""
        return "--" + name.replace("_", "-")

    @classmethod
    def parse(cls, name: str, text: str) -> Any:
        """The value of option ``name`` written as text (a command-line flag, a JSON number): converted by
        the field's type and checked like any other value (a ``ValueError`` naming the option)."""
        f = cls.field(name)
        try:
            value = f.metadata["parse"](text)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={text!r}: expected {_TEXT_KINDS[f.metadata['parse']]}") from None
        check_values({name: value})
        return value

    @classmethod
    def applies(cls, name: str, search: str, rule: str = "hf") -> bool:
        """Whether option ``name`` takes part in ``search`` under ``rule`` (else only its default is allowed)."""
        where = cls.field(name).metadata["searches"]
        return "*" in where or search in where or f"{search}:{rule}" in where

    @classmethod
    def of(cls, options: "GenerationOptions | None" = None, **kwargs) -> "GenerationOptions":
        """``options`` (or the defaults) with ``kwargs`` replacing fields: ``generate``'s keyword arguments.
        An unknown name is refused by name; ``n`` (sampling) and ``num_return`` (beam search) are the
        search functions' names of ``num_samples`` and are refused in the other searches."""
        unknown = sorted(set(kwargs) - set(cls.names()) - set(ALIASES))
        if unknown:
            raise ValueError(f"{unknown[0]}: not a generation option (options: {', '.join(cls.names())})")
        values = dataclasses.asdict(options) if options is not None else {}
        names = {}
        for name, value in kwargs.items():
            field = ALIASES.get(name, name)
            if field != name and field in kwargs:
                raise ValueError(f"{name} and {field}: the same option given twice")
            values[field], names[field] = value, name
        check_values(values, names)
        full = {f.name: values.get(f.name, f.default) for f in dataclasses.fields(cls)}
        check_search(full, names)
        search = search_of(full["num_beams"], full["do_sample"])
        for alias, own in (("n", "sampling"), ("num_return", "beam search")):
            if alias in kwargs and search != own:
                raise ValueError(f"{alias}={kwargs[alias]!r}: not an option of {search} (it is {own}'s; "
                                 f"num_samples is every search's)")
        return cls(**full)


def search_of(num_beams: int, do_sample: bool) -> str:
    return "beam search" if num_beams > 1 else "sampling" if do_sample else "greedy decoding"


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(GenerationOptions)}


def check_values(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Refuse a bad value with a ``ValueError`` naming it (``names``: the name the caller used, for
    ``n`` / ``num_return``). Only the options present are checked, and those of them that go together:
    ``min_new_tokens <= max_new_tokens``, ``num_samples <= num_beams`` in beam search."""
    names = names or {}
    fields = _fields()

    def bad(name, why):
        raise ValueError(f"{names.get(name, name)}={values[name]!r}: {why}")

    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{name}: not a generation option (options: {', '.join(fields)})")
        why = fields[name].metadata["check"](value)
        if why:
            bad(name, why)
    if "min_new_tokens" in values and "max_new_tokens" in values \
            and values["min_new_tokens"] > values["max_new_tokens"]:
        bad("min_new_tokens", f"must not exceed max_new_tokens={values['max_new_tokens']}")
    if "num_samples" in values:
        beams = values.get("num_beams", 1)
        beam_search = not values.get("do_sample") and (beams > 1 or names.get("num_samples") == "num_return"
                                                       and "num_beams" in values)
        if beam_search and values["num_samples"] > beams:
            bad("num_samples", f"must not exceed num_beams={beams}")


def check_search(values: Mapping[str, Any], names: Mapping[str, str] | None = None, search: str | None = None) -> None:
    """Refuse a combination of (checked) values of every field that no search runs: beam sampling, a
    greedy rule, or an option differing from its default where the search (``search``, else the one
    ``num_beams`` / ``do_sample`` choose) would ignore it."""
    names = names or {}
    if values["do_sample"] and values["num_beams"] > 1:
        raise ValueError("do_sample=True with num_beams > 1: beam sampling is not implemented")
    search, rule = search or search_of(values["num_beams"], values["do_sample"]), values["rule"]
    for name, f in _fields().items():
        if values[name] == f.default or GenerationOptions.applies(name, search, rule):
            continue
        shown = f"{names.get(name, name)}={values[name]!r}"
        other = [r for r in RULES if GenerationOptions.applies(name, search, r)]
        if other:
            raise ValueError(f"{shown}: {search} has this option only with rule={other[0]!r}")
        own = [n for n in _fields() if GenerationOptions.applies(n, search, rule)
               and not GenerationOptions.applies(n, "greedy decoding", "hf")]
        hint = f"its options: {', '.join(own)}" if own else "set do_sample=True or num_beams > 1"
        raise ValueError(f"{shown}: not an option of {search} ({hint})")


__all__ = ["ALIASES", "GenerationOptions", "RULES", "SEARCHES", "check_search", "check_values", "search_of"]
