"""``kexue`` command line: ``kexue <command> [options]``; ``kexue --help`` lists the commands.

Each command lives in its own module exposing ``main(argv)`` (or ``module:function``); it is imported
only when run. One handler here reports every failure as one line, ``kexue: error: …``, with exit
status 2 (``--debug`` anywhere on the line shows the traceback instead).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kexue.demo", "the flagship demo: sentence embeddings on real data"),
    "evaluate": ("kexue.similarity.evaluate", "Spearman of a sentence encoder on every STS set (table)"),
    "classify": ("kexue.tasks.classify", "short-text / sentence-pair classification: Tang vs Song or a user TSV"),
    "poem": ("kexue.tasks.poem", "class-conditional poem generation with Conditional LayerNorm (fortunes-zh)"),
    "reading": ("kexue.tasks.reading", "UniLM reading comprehension with multi-passage voting (WebQA), EM/F1"),
    "dialogue": ("kexue.tasks.dialogue", "multi-turn dialogue with a causal LM, response perplexity"),
    "ner": ("kexue.tasks.ner", "NER on People's Daily: GlobalPointer (+R-Drop) or CRF, entity P/R/F1"),
    "diffusion": ("kexue.diffusion.cli", "train a diffusion/flow model on digits or images, save samples"),
    "gan": ("kexue.generative.gan_cli", "train a GAN (DCGAN/SELF-MOD; hinge/WGAN-GP/reflow) on digits or images"),
    "similarity": ("kexue.similarity.pair_training", "sentence encoder on labelled pairs: CoSENT / SBERT / cosine loss"),
    "convert": ("kexue.bert4keras", "bert4keras TF checkpoint -> HF-layout folder (kexue convert bert4keras ...)"),
    "pretrain": ("kexue.pretraining", "MLM (whole-word masking) / UniLM pretraining on a folder of text"),
    "predict": ("kexue.predict:predict_main", "predict with a saved model folder: JSON lines out"),
    "chat": ("kexue.predict:chat_main", "chat with a saved dialogue model (stdin lines)"),
    "embed": ("kexue.predict:embed_main", "sentence vectors of a saved encoder: JSON lines out"),
    "search": ("kexue.predict:search_main", "nearest sentences of a corpus with a saved encoder"),
    "serve": ("kexue.serve", "serve a saved model over HTTP (FastAPI): /predict, /health"),
}


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _usage_error(self: argparse.ArgumentParser, message: str):
    """argparse's error hook for every command: raise, so the handler below prints one line."""
    from .argtypes import UsageError

    raise UsageError(f"{self.prog}: {message}")


def _usage() -> str:
    from . import __version__

    lines = [f"usage: kexue [--version] [--debug] <command> [options]   (kexue {__version__})", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    lines += ["", "`kexue <command> --help` describes a command's options and their defaults.",
              "--debug: show the full traceback of an error."]
    return "\n".join(lines)


def run(name: str, argv: list[str]) -> int:
    spec = COMMANDS[name][0]
    module, _, func = spec.partition(":")
    return int(getattr(importlib.import_module(module), func or "main")(argv) or 0)


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
        from . import __version__

        print(f"kexue {__version__}")
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
