"""Class-conditional poem generation with Conditional LayerNorm. Same as `kexue poem`.

    python recipes/poem.py                 # Tang vs Song
    python recipes/poem.py --by poet
"""
import sys

from kexue.tasks.poem import main

if __name__ == "__main__":
    sys.exit(main())
