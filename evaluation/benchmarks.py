"""Benchmarks: an ordered task list (name, class names, templates) and split loading.

A benchmark config names a ``loader`` (the family of its data) and ``num_tasks``; the
benchmark is the first ``num_tasks`` tasks of that family's canonical order (the TALL
masks paper's 8 / 14 / 20). Splits: ``train`` (train minus val), ``val`` (10% of train,
at most 5000, seed 0) and ``test``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SPLITS = ("train", "val", "test")
# loader name -> module with ``task_order(cfg) -> list[Task]`` and
# ``load_split(cfg, task, split, cache_dir, image_size) -> (uint8 images NCHW, int64 labels)``
LOADERS = {"sandbox": "evaluation.sandbox.benchmark", "hub": "evaluation.clip.datasets"}


@dataclass(frozen=True)
class Task:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def _loader(cfg: Mapping[str, Any]):
    name = cfg.get("loader")
    if name not in LOADERS:
        raise ValueError(
            f"benchmark {cfg.get('name')!r}: unknown loader {name!r}; valid: {', '.join(LOADERS)}"
        )
    return importlib.import_module(LOADERS[name])


def benchmark_tasks(cfg: Mapping[str, Any]) -> list[Task]:
    """The benchmark's tasks in order (the first ``num_tasks`` of its family's order)."""
    order = _loader(cfg).task_order(cfg)
    n = int(cfg.get("num_tasks", len(order)))
    if not 1 <= n <= len(order):
        raise ValueError(
            f"benchmark {cfg.get('name')!r}: num_tasks={n} but the family has {len(order)} tasks"
        )
    return list(order[:n])


def load_split(
    cfg: Mapping[str, Any], task: Task, split: str, cache_dir: Path, image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, image_size, image_size) and int64 labels of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return _loader(cfg).load_split(cfg, task, split, cache_dir, image_size)


def select_tasks(tasks: Sequence[Task], names: Sequence[str] | None) -> list[Task]:
    """Restrict ``tasks`` to ``names`` (in benchmark order); unknown names list the valid ones."""
    if not names:
        return list(tasks)
    valid = {t.name for t in tasks}
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown task {name!r}; this benchmark has: {', '.join(valid)}")
    return [t for t in tasks if t.name in set(names)]
