"""One torch thread for tests of tiny models (``one_thread_fixture``)."""

from collections.abc import Callable, Iterator

import pytest
import torch


def one_thread_fixture(scope: str = "function", autouse: bool = False) -> Callable:
    """A fixture that runs torch on one thread for its ``scope`` and then restores the
    previous count: tiny models train and merge faster without the synchronisation of a
    second thread (and do not fight other jobs for this 2-core machine's cores). Bind it
    to the name ``one_thread`` in a conftest or test module."""

    @pytest.fixture(scope=scope, autouse=autouse, name="one_thread")
    def fixture() -> Iterator[None]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    return fixture
