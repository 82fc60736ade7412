"""``kexue`` command line: ``kexue <command> [options]``; ``kexue --help`` lists the commands.

Every command is a :class:`~kexue.recipes.Recipe` of :data:`kexue.recipes.REGISTRY`; its module is imported
only when it runs. One handler here reports every failure as one line, ``kexue: error: …``, with exit
status 2 (``--debug`` anywhere on the line shows the traceback instead).
"""
from __future__ import annotations

import argparse
import sys
import traceback

from kexue.recipes import COMMANDS  # the one registry of programs (kexue.recipes.REGISTRY)


def version() -> str:
    """The installed distribution's version (the same string as ``kexue.__version__``)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("kexue")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _usage_error(self: argparse.ArgumentParser, message: str):
    """argparse's error hook for every command: raise, so the handler below prints one line."""
    from kexue.recipes.args import UsageError

    raise UsageError(f"{self.prog}: {message}")


def _usage() -> str:
    lines = [f"usage: kexue [--version] [--debug] <command> [options]   (kexue {version()})", "", "commands:"]
    lines += [f"  {name:<10} {r.summary}" for name, r in sorted(COMMANDS.items())]
    lines += ["", "`kexue <command> --help` describes a command's options and their defaults.",
              "--debug: show the full traceback of an error."]
    return "\n".join(lines)


def run(name: str, argv: list[str]) -> int:
    return int(COMMANDS[name].main()(argv) or 0)


def dispatch(argv: list[str]) -> int:
    """``kexue <command> …`` without the error handler: exceptions propagate (for Python callers and tests)."""
    if not argv or argv[0] not in COMMANDS:
        raise ValueError(f"unknown command {argv[0] if argv else ''!r}; try `kexue --help`")
    return run(argv[0], argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"kexue {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kexue: error: unknown command {name!r}; try `kexue --help`", file=sys.stderr)
        return 2
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _usage_error  # commands on plain argparse report in one line too
    try:
        return run(name, rest)
    except KeyboardInterrupt:
        print("kexue: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help, or a command that exits by itself
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except Exception as e:  # noqa: BLE001 - the one place every failure becomes a clear line
        if debug:
            traceback.print_exc()
        else:
            kind = "" if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: "
            print(f"kexue: error: {_one_line(kind + str(e)) or type(e).__name__}", file=sys.stderr)
        return 2
    finally:
        argparse.ArgumentParser.error = original


if __name__ == "__main__":
    sys.exit(main())
