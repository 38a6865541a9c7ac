"""What a pipeline gets from the Hydra entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.results import Row
from evaluation.zoo import Env
from experiments.loggers import NullLogger


@dataclass
class RunContext:
    """The run's name and directory, its logger, where it computes (``env``), and the rows
    of units (methods) already finished with this exact config, which a pipeline yields
    as they are instead of computing them again (resume)."""

    name: str
    run_dir: Path
    logger: NullLogger
    env: Env
    finished: Mapping[str, list[Row]] = field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.env.cache_dir

    @property
    def device(self) -> str:
        return self.env.device

    @property
    def progress(self) -> bool:
        return self.env.progress
