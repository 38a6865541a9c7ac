"""Pipelines by model family: ``validate(cfg)``, ``run(cfg, ctx) -> rows``, ``table(frame)``."""

import importlib
from types import ModuleType

PIPELINES = {"clip": "task_vectors", "cnn": "different_init"}


def pipeline_for(family: str | None) -> ModuleType:
    """The pipeline module of a model family; unknown families list the valid ones."""
    if family not in PIPELINES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(PIPELINES)}")
    return importlib.import_module(f"{__name__}.{PIPELINES[family]}")
