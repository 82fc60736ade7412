"""Argument checking for the ``kexue`` commands: argparse ``type=`` functions that refuse bad numbers
and paths while the command line is parsed, before any data is read or any model trained.

Every function raises :class:`argparse.ArgumentTypeError` with a message naming what was expected;
:class:`ArgumentParser` turns a usage error into :class:`UsageError` so the top-level handler of
``kexue`` prints it as one line (``kexue: error: …``) and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A bad command line: reported in one line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` after every option that takes a value, unless its help already says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return text + " (required)"
        if "(default" in text.lower() or action.nargs == 0 or action.default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return text + (" (default: unset)" if action.default is None else " (default: %(default)s)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in ``--help`` and usage errors raised instead of printed."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` is a typo to report, not a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{self.prog}: {message}")


def _number(kind: type, text: str) -> int | float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(kind: type, text: str, ok, what: str) -> int | float:
    value = _number(kind, text)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (counts: epochs, batch size, lengths, samples)."""
    return _checked(int, text, lambda v: v >= 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer ≥ 0 (seeds, optional counts where 0 means none)."""
    return _checked(int, text, lambda v: v >= 0, "an integer ≥ 0")


def finite_float(text: str) -> float:
    return _number(float, text)


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, temperatures)."""
    return _checked(float, text, lambda v: v > 0, "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """A finite number ≥ 0 (loss weights such as the R-Drop α)."""
    return _checked(float, text, lambda v: v >= 0, "a finite number ≥ 0")


def probability(text: str) -> float:
    """A probability in [0, 1]."""
    return _checked(float, text, lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def open_probability(text: str) -> float:
    """A probability in (0, 1] (nucleus top-p: 0 would keep nothing)."""
    return _checked(float, text, lambda v: 0 < v <= 1, "in (0, 1]")


def port(text: str) -> int:
    value = _number(int, text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 0..65535, got {text!r}")
    return value


def run_folder_args(parser: argparse.ArgumentParser, where: str = "--out") -> None:
    """``--resume`` / ``--overwrite`` (exclusive) for a command whose ``where`` holds a run folder of
    :func:`kexue.train.fit`: what to do when its recorded settings differ from this command line."""
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"continue the run in {where} even though its recorded settings differ")
    again.add_argument("--overwrite", action="store_true", help=f"start the run in {where} over")


def input_file(text: str) -> str:
    """An existing, readable file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text}")
    return text


def model_dir(text: str) -> str:
    """An existing folder holding a ``config.json`` (a saved model), or a hub id ``org/name[@revision]``
    (fetched into the hub cache; :mod:`kexue.hub`), returned as the local folder."""
    from kexue.hub import HubError, is_hub_id, resolve

    if is_hub_id(text):
        try:
            text = str(resolve(text))
        except HubError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such model folder: {text}")
    if not (path / "config.json").is_file():
        from kexue.models.family import bert4keras_folder_hint

        raise argparse.ArgumentTypeError(bert4keras_folder_hint(path)
                                         or f"{text} holds no config.json (not a saved model folder)")
    return text


def model_or_index(text: str) -> str:
    """An existing model folder (``config.json``) or search-index folder (``index.json``)."""
    if (Path(text) / "index.json").is_file():
        return text
    return model_dir(text)


def model_or_shipped(text: str) -> str:
    """A model folder, or the name of a model that ships with kexue (``minilm``, ``zh-mini``)."""
    from kexue.models.pretrained import SHIPPED

    return text if text in SHIPPED else model_dir(text)


def check_output_dir(path: str | os.PathLike, unit: bool = True) -> Path:
    """Make sure ``path`` is (or can become) a writable folder, by creating and removing a probe file;
    ``unit``: a folder written as one unit (:func:`kexue.io.write_folder`): its parent must be writable too
    (the new folder is built beside it and swapped in), and what a killed save left beside ``path`` is
    finished or removed first (:func:`kexue.io.recover_folder`).
    Called before training so a bad ``--out`` fails in a second, not after an hour."""
    from kexue.io import recover_folder

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a folder")
    try:
        if unit:
            recover_folder(path)
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kexue-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"--out {path} is not writable: {e.strerror or e}") from None
    try:
        if unit:
            os.rmdir(tempfile.mkdtemp(prefix=".kexue-probe-", dir=Path(os.path.abspath(path)).parent))
    except OSError as e:
        raise UsageError(f"--out {path}: its parent folder is not writable ({e.strerror or e}); the model folder "
                         "is built beside --out and then swapped in") from None
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """The folder of an output file must be writable; the file itself is written atomically later."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder, expected a file name")
    check_output_dir(path.parent if str(path.parent) else Path("."), unit=False)
    return path


__all__ = ["ArgumentParser", "UsageError", "check_output_dir", "check_output_file", "finite_float", "input_file",
           "model_dir", "nonnegative_float", "nonnegative_int", "open_probability", "port", "positive_float",
           "positive_int", "probability"]
