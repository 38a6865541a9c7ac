import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these small CNNs train faster without thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
