"""Student tests run torch on one thread (see the one_torch_thread fixture in test/conftest.py)."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread(one_torch_thread):
    """Every test here runs torch on one thread (see test/conftest.py)."""
    yield
