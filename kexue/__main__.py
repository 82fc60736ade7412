"""``python -m kexue <command>``: the same as the ``kexue`` command."""
import sys

from kexue.cli import main

sys.exit(main())
