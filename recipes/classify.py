"""Short-text classification: Tang vs Song poems (or --by poet, or your TSV). Same as `kexue classify`.

    python recipes/classify.py                                  # fortunes-zh Tang vs Song
    python recipes/classify.py --train my.tsv --dev dev.tsv     # text<TAB>label (or text_a<TAB>text_b<TAB>label)
    kexue predict runs/classify "床前明月光"                       # the saved model: label + probabilities
"""
import sys

from kexue.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))  # one-line errors, --debug for a traceback
