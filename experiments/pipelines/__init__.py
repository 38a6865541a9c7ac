"""Pipelines, one per regime, chosen by the ``pipeline`` config group and built with
``hydra.utils.instantiate``: ``task_vectors`` and ``different_init``.

The contract (:class:`Pipeline`): ``depends_on(unit, methods)`` names the other selected
methods whose results a unit's rows depend on (Consensus on the TALL-masks lambdas), so
that a stored unit is reused only with the same configs of those too, and the methods that
depend on each other run in one process; ``validate(cfg)`` raises, naming the key at fault,
before any long computation; ``run(cfg, ctx)`` yields ``(unit, rows)`` as each unit of work
(a method) finishes, so the entry point can write them to disk at once; ``table(frame)``
turns the run's long-format rows into the paper-style table. A run whose every unit is
stored calls only ``depends_on`` and ``table``: a pipeline keeps the module that defines
them light (no torch) and imports its computation in ``validate`` and ``run``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd
from omegaconf import DictConfig

if TYPE_CHECKING:
    from evaluation.results import Row
    from experiments.context import RunContext


@runtime_checkable
class Pipeline(Protocol):
    def depends_on(self, unit: str, methods: Mapping[str, Mapping[str, Any]]) -> list[str]: ...

    def validate(self, cfg: DictConfig) -> None: ...

    def run(self, cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]: ...

    def table(self, frame: pd.DataFrame) -> pd.DataFrame: ...
