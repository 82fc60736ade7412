"""Seq2seq reading comprehension with multi-passage voting (WebQA JSON). Same as `kexue reading`.

    python recipes/reading.py --train webqa.train.json --dev webqa.dev.json
    kexue predict runs/reading '{"question": "...", "passages": ["...", "..."]}'
"""
import sys

from kexue.cli import main

if __name__ == "__main__":
    sys.exit(main(["reading", *sys.argv[1:]]))  # one-line errors, --debug for a traceback
