"""Seq2seq reading comprehension with multi-passage voting (WebQA JSON). Same as `kexue reading`.

    python recipes/reading.py --train webqa.train.json --eval webqa.dev.json
"""
import sys

from kexue.tasks.reading import main

if __name__ == "__main__":
    sys.exit(main())
