"""NER on People's Daily: GlobalPointer (R-Drop optional) vs CRF. Same as `kexue ner`.

    python recipes/ner.py --head globalpointer            # or: efficient, crf;  --rdrop 1.0
"""
import sys

from kexue.tasks.ner import main

if __name__ == "__main__":
    sys.exit(main())
