"""What a pipeline gets from the Hydra entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.loggers import NullLogger


@dataclass
class RunContext:
    """The run's name and directory, its logger, the cache root, device and progress flag."""

    name: str
    run_dir: Path
    logger: NullLogger
    cache_dir: Path
    device: str
    progress: bool
