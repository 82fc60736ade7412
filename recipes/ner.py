"""NER on People's Daily: GlobalPointer (R-Drop optional) vs CRF. Same as `kexue ner`.

    python recipes/ner.py --head globalpointer            # or: efficient, crf;  --rdrop 1.0
    python recipes/ner.py --train my.bio --dev dev.bio    # 'char TAG' lines, BIO or BIOES
    kexue predict runs/ner "北京大学的王小明"                # entity spans with character offsets
"""
import sys

from kexue.cli import main

if __name__ == "__main__":
    sys.exit(main(["ner", *sys.argv[1:]]))  # one-line errors, --debug for a traceback
