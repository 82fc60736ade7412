"""Shared by the generation tests: decoding is many tiny ops, and with 2 intra-op threads on a busy
2-core machine every op waits for the second thread to be scheduled (ms per op). One thread is faster."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
