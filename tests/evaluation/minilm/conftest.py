"""Stand-ins of the real sources, the tiny BERT among them (tests/evaluation/real/standins.py),
and a tiny MiniLM zoo recipe."""

from __future__ import annotations

import pytest

from evaluation.minilm.config import FinetuneRecipe, HeadRecipe, MiniLMRecipe
from tests.evaluation.real import standins
from tests.threads import one_thread_fixture

TASKS = ["part_of_speech", "verb_transitivity"]
RECIPE = MiniLMRecipe(
    max_length=12,
    head=HeadRecipe(steps=30, lr=0.05),
    finetune=FinetuneRecipe(steps=4, batch_size=4, lr=1e-3, warmup=1),
)


@pytest.fixture(scope="session")
def standin_sources(tmp_path_factory):
    """The stand-in registry; its ``minilm`` is the tiny BERT."""
    return standins.registry(tmp_path_factory.mktemp("sources"), model=True)


@pytest.fixture
def patched_sources(standin_sources, monkeypatch):
    """The registry replaced by the stand-ins for one test."""
    return standins.patch(monkeypatch, standin_sources)


one_thread = one_thread_fixture("session", autouse=True)  # tiny stand-in models
