"""``kexue`` command line: ``kexue <command> [options]``; ``kexue --help`` lists the commands.

Each command lives in its own module exposing ``main(argv)``; it is imported only when run.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kexue.demo", "the flagship demo: sentence embeddings on real data"),
    "evaluate": ("kexue.similarity.evaluate", "Spearman of a sentence encoder on every STS set (table)"),
    "classify": ("kexue.tasks.classify", "short-text classification: Tang vs Song poems or a user TSV, accuracy"),
    "poem": ("kexue.tasks.poem", "class-conditional poem generation with Conditional LayerNorm (fortunes-zh)"),
    "reading": ("kexue.tasks.reading", "UniLM reading comprehension with multi-passage voting (WebQA), EM/F1"),
    "dialogue": ("kexue.tasks.dialogue", "multi-turn dialogue with a causal LM, response perplexity"),
    "ner": ("kexue.tasks.ner", "NER on People's Daily: GlobalPointer (+R-Drop) or CRF, entity P/R/F1"),
    "diffusion": ("kexue.diffusion.cli", "train a diffusion/flow model on digits or images, save samples"),
    "convert": ("kexue.bert4keras", "bert4keras TF checkpoint -> HF-layout folder (kexue convert bert4keras ...)"),
    "pretrain": ("kexue.pretraining", "MLM (whole-word masking) / UniLM pretraining on a folder of text"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: kexue <command> [options]\n\ncommands:")
        for name, (_, help_) in sorted(COMMANDS.items()):
            print(f"  {name:<14} {help_}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kexue: unknown command {name!r}; try `kexue --help`", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
