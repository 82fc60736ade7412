"""Fixtures shared by the recipe tests."""
import pytest

from recipes_common import write_data


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every recipe's training / dev files, written once per test module from the shipped real data."""
    return write_data(tmp_path_factory.mktemp("data"))
