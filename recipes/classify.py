"""Short-text classification: Tang vs Song poems (or --by poet, or --tsv your data). Same as `kexue classify`.

    python recipes/classify.py                      # fortunes-zh Tang vs Song
    python recipes/classify.py --tsv my.tsv         # text<TAB>label lines
"""
import sys

from kexue.tasks.classify import main

if __name__ == "__main__":
    sys.exit(main())
