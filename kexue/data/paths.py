"""Where the shared folder beside the repository is: ``$KEXUE_SHARED`` if set, otherwise ``<repo>/../shared``
(the folder next to the repository root, the layout CI uses); it holds ``data/`` and ``seeds/``.
``$KEXUE_DATA`` overrides the data folder alone. (Re-exported by :mod:`kexue.data.shipped`.)"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    """The shared folder (``$KEXUE_SHARED`` or ``<repo>/../shared``) holding ``data/`` and ``seeds/``."""
    env = os.environ.get("KEXUE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def data_root() -> Path:
    """Folder holding the shared datasets (``$KEXUE_DATA`` or ``shared_root()/data``)."""
    env = os.environ.get("KEXUE_DATA")
    root = Path(env) if env else shared_root() / "data"
    if not root.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {root}; set KEXUE_SHARED to the folder holding data/ and seeds/ "
            "(or KEXUE_DATA to the folder holding sts-b-zh/, sts-b-en/, ner-peoples-daily/, fortunes-zh/, "
            "webqa-sample/)"
        )
    return root


def seeds_root() -> Path:
    """Folder holding the shared seed files (``shared_root()/seeds``)."""
    root = shared_root() / "seeds"
    if not root.is_dir():
        raise FileNotFoundError(f"shared seeds folder not found at {root}; set KEXUE_SHARED to the folder "
                                "holding data/ and seeds/")
    return root


__all__ = ["REPO", "data_root", "seeds_root", "shared_root"]
