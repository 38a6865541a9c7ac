"""Result rows in long format: one measured value per row.

Columns: run, benchmark, model, method, hyperparameters (canonical JSON), task, split,
metric, value. Per-task rows carry the task name; averages over tasks use the task
``"average"``. Metrics: ``accuracy`` (top-1, %) and ``normalized_accuracy`` (merged
accuracy / the task's own fine-tuned expert accuracy, %; Wang et al., ICML 2024) on splits
``val`` and ``test``; ``storage_gbit`` (split ``test``); the merge's cost on split
``merge``: ``merge_seconds`` (wall) and ``merge_peak_mib`` (peak extra memory). Data-based
methods add, per task, ``examples_used`` (split: the split the examples came from) and, on
the average, ``test_time_adaptation`` (1 if they saw unlabelled test inputs, split ``test``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from evaluation.cache import atomic_path

COLUMNS = (
    "run",
    "benchmark",
    "model",
    "method",
    "hyperparameters",
    "task",
    "split",
    "metric",
    "value",
)
AVERAGE = "average"


def hparams_key(hparams: Mapping[str, object]) -> str:
    """Canonical JSON of a hyperparameter setting (sorted keys), used as a row field."""
    return json.dumps(dict(hparams), sort_keys=True, default=str)


@dataclass(frozen=True)
class Row:
    run: str
    benchmark: str
    model: str
    method: str
    hyperparameters: str
    task: str
    split: str
    metric: str
    value: float


def rows_frame(rows: Iterable[Row]) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))


def write_rows(rows: Iterable[Row], path: str | os.PathLike) -> pd.DataFrame:
    """Write rows as CSV through a temporary file, so earlier results survive a crash."""
    frame = rows_frame(rows)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_rows(*paths: str | os.PathLike) -> pd.DataFrame:
    """Concatenate result files; errors name the file that is not one (unreadable as CSV,
    or without the columns)."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype={"hyperparameters": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a mergelab results file ({e})") from None
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: not a mergelab results file (no column {missing[0]!r})")
        frames.append(frame[list(COLUMNS)])
    return pd.concat(frames, ignore_index=True) if frames else rows_frame([])
