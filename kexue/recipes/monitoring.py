"""The recipes' monitoring option: ``--tensorboard DIR``, TensorBoard event files of the training run
(loss and its parts, learning rate, gradient norm, the dev metric at each evaluation), written by
:func:`kexue.train.fit` (``log_dir``; :mod:`kexue.train.tensorboard` says what is logged and what a resumed
run shows). ``tensorboard --logdir DIR`` then plots them."""
from __future__ import annotations

import argparse
from typing import Any

from kexue.recipes import args as at


def log_folder(text: str) -> str:
    """A writable folder for event files, with the tensorboard package installed (refused by name if not)."""
    from kexue.train.tensorboard import require_tensorboard

    try:
        require_tensorboard("--tensorboard")
    except ImportError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    at.check_output_dir(text, unit=False)
    return text


def add_monitoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", type=log_folder, default=None, metavar="DIR",
                   help="write TensorBoard event files of the run into DIR: loss, learning rate, gradient norm, dev "
                        "metric; a resumed run continues them without repeating steps (default: none)")


def monitoring_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`kexue.train.fit`'s keyword arguments for the monitoring options given."""
    return {"log_dir": args.tensorboard} if getattr(args, "tensorboard", None) else {}
