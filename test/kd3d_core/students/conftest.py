"""Student tests run torch on one thread: the dev/CI CPU is shared, and two OpenMP threads on a loaded 2-core
machine run far slower than one."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
