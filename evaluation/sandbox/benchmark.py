"""The sandbox tasks as a benchmark family (``loader: sandbox`` in a benchmark config)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evaluation.benchmarks import Task
from evaluation.sandbox import data
from evaluation.sandbox.tasks import IMAGE_SIZE, TASKS


def task_order(cfg: Mapping[str, Any]) -> list[Task]:
    return [Task(t.name, tuple(t.classnames), tuple(t.templates)) for t in TASKS]


def load_split(
    cfg: Mapping[str, Any], task: Task, split: str, cache_dir: Path, image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if image_size != IMAGE_SIZE:
        raise ValueError(
            f"benchmark {cfg.get('name')!r} has {IMAGE_SIZE}x{IMAGE_SIZE} images; "
            f"the model expects {image_size}x{image_size}"
        )
    return data.load_split(task.name, split, cache_dir)
