import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and far faster than two on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
