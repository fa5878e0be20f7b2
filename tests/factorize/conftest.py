import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """These tests use tiny tensors: one intra-op thread avoids OpenMP spin-waits on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
