"""Multi-turn dialogue with a causal LM. Same as `kexue dialogue`.

    python recipes/dialogue.py --tsv chats.tsv      # one dialogue per line, turns TAB-separated
"""
import sys

from kexue.tasks.dialogue import main

if __name__ == "__main__":
    sys.exit(main())
