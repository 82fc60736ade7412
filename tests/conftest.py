"""Tests read the real data and seeds from the shared folder: ``$KEXUE_SHARED`` if set, otherwise
``<repo>/../shared`` (see :func:`kexue.datasets.shared_root`; ``$KEXUE_DATA`` overrides the data folder)."""
import os
from pathlib import Path

import pytest
import torch

from kexue.datasets import shared_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    """The read-only shared folder (``data/``, ``seeds/``) next to the repository."""
    return shared_root()
