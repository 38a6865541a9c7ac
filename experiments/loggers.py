"""Experiment loggers, built from the ``logger`` config group with ``hydra.utils.instantiate``
(the run passes ``run_dir``, ``name`` and ``config``): W&B or none.

W&B runs offline unless ``$WANDB_MODE`` or ``logger.mode`` says otherwise (no account or
network needed; ``wandb sync`` uploads later); ``logger.mode=online`` logs live.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

MODES = ("offline", "online", "disabled")


class NullLogger:
    """Logs nothing (``logger=none``)."""

    def __init__(self, **run: Any) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        pass

    def log_image(self, name: str, path: Path) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        """End the run, marked failed if ``failed`` (an exception or interrupt)."""


class WandbLogger(NullLogger):
    """A W&B run whose files live in the run directory."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        config: Mapping[str, Any],
        project: str = "mergelab",
        mode: str | None = None,
        entity: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        import os

        import wandb

        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            dir=str(run_dir),
            config=dict(config),
            mode=mode,
            tags=list(tags or []),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self.run.log({name: self._wandb.Table(dataframe=frame.reset_index(drop=True))})

    def log_image(self, name: str, path: Path) -> None:
        self.run.log({name: self._wandb.Image(str(path))})

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
