"""Tests read the real data and seeds from the shared folder: ``$KEXUE_SHARED`` if set, otherwise
``<repo>/../shared`` (see :func:`kexue.data.shipped.shared_root`; ``$KEXUE_DATA`` overrides the data folder)."""
import os
import sys
from pathlib import Path

import pytest
import torch

from kexue.data.shipped import shared_root

# the shared test helpers (families_common, generation_common, bert4keras_common) for tests in every subfolder
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
