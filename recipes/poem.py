"""Class-conditional poem generation with Conditional LayerNorm. Same as `kexue poem`.

    python recipes/poem.py                     # Tang vs Song
    python recipes/poem.py --by poet
    python recipes/poem.py --train poems.txt   # one poem per line, optionally class<TAB>poem
    kexue predict runs/poem 唐 --num-samples 3 # poems from the saved model
"""
import sys

from kexue.cli import main

if __name__ == "__main__":
    sys.exit(main(["poem", *sys.argv[1:]]))  # one-line errors, --debug for a traceback
