"""Pipelines, one per regime, chosen by the ``pipeline`` config group and built with
``hydra.utils.instantiate``: ``task_vectors`` and ``different_init``.

The contract (:class:`Pipeline`): ``validate(cfg)`` raises, naming the key at fault,
before any long computation; ``run(cfg, ctx)`` yields ``(unit, rows)`` as each unit of work
(a method) finishes, so the entry point can write them to disk at once; ``table(frame)``
turns the run's long-format rows into the paper-style table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pandas as pd
from omegaconf import DictConfig

from evaluation.results import Row
from experiments.context import RunContext


@runtime_checkable
class Pipeline(Protocol):
    def validate(self, cfg: DictConfig) -> None: ...

    def run(self, cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]: ...

    def table(self, frame: pd.DataFrame) -> pd.DataFrame: ...
