"""Experiment loggers selected by the ``logger`` config group: W&B or none.

W&B runs offline by default (no account or network needed; ``wandb sync`` uploads
later); ``logger.mode=online`` logs live.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


class NullLogger:
    """Logs nothing (``logger=none``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """A W&B run whose files live in the run directory."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        config: Mapping[str, Any],
        project: str,
        mode: str,
        entity: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            dir=str(run_dir),
            config=dict(config),
            mode=mode,
            tags=tags,
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self.run.log({name: self._wandb.Table(dataframe=frame.reset_index(drop=True))})

    def finish(self) -> None:
        self.run.finish()


def make_logger(cfg: Mapping[str, Any], run_dir: Path, name: str, config: Mapping[str, Any]):
    """The logger named by ``cfg.kind`` (``wandb`` or ``none``)."""
    kind = cfg.get("kind", "none")
    if kind == "none":
        return NullLogger()
    if kind == "wandb":
        mode = cfg.get("mode", "offline")
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        return WandbLogger(
            run_dir,
            name,
            config,
            project=cfg.get("project", "mergelab"),
            mode=mode,
            entity=cfg.get("entity"),
            tags=list(cfg.get("tags") or []),
        )
    raise ValueError(f"unknown logger kind {kind!r}; valid: wandb, none")
