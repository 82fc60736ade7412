"""``python -m kexue.cli <command>`` (e.g. under ``torchrun``)."""
import sys

from kexue.cli import main

sys.exit(main())
