"""Multi-turn dialogue with a causal LM. Same as `kexue dialogue`.

    python recipes/dialogue.py --train chats.txt    # one turn per line, a blank line between dialogues
    kexue chat runs/dialogue                        # talk to the saved model (stdin lines)
"""
import sys

from kexue.cli import main

if __name__ == "__main__":
    sys.exit(main(["dialogue", *sys.argv[1:]]))  # one-line errors, --debug for a traceback
