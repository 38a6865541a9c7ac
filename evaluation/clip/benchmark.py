"""The vision benchmark of the TALL masks paper (Wang et al., ICML 2024) and Task Arithmetic
(Ilharco et al., ICLR 2023), data from the Hugging Face hub or local copies
(``conf/benchmark/{tall8,tall14,tall20,ta8}.yaml``).

The tasks are the first ``num_tasks`` of an order (:data:`evaluation.clip.tasks.ORDERS`)
or an explicit ``task_names`` list. Where a task's data comes from: ``sources[task]`` (a hub
dataset id or a local path) if set, else ``<data_root>/<task>`` if that exists, else the
task's hub id; decoding and caching: :mod:`evaluation.clip.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.benchmark import Task, check_split, first_tasks
from evaluation.clip.config import HubVisionBenchmarkConfig, check_fields
from evaluation.clip.datasets import TaskSource, load_split
from evaluation.clip.tasks import DATASETS, ORDERS, dataset_spec


@dataclass
class HubVisionBenchmark(HubVisionBenchmarkConfig):
    """The benchmark of its config (fields: :class:`HubVisionBenchmarkConfig`); bad names
    fail on construction, naming the key."""

    def __post_init__(self) -> None:
        check_fields(self, HubVisionBenchmarkConfig, "benchmark")
        if self.order not in ORDERS:
            raise ValueError(
                f"benchmark.order={self.order!r} is unknown; valid: {', '.join(ORDERS)}"
            )
        names = list(self.task_names or ORDERS[self.order])
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark.task_names lists a task twice: {names}")
        for key in ("task_names", "sources", "revisions"):
            unknown = sorted(set(getattr(self, key) or ()) - set(DATASETS))
            if unknown:
                raise ValueError(
                    f"benchmark.{key} names unknown task {unknown[0]!r}; "
                    f"valid: {', '.join(DATASETS)}"
                )
        specs = [dataset_spec(name) for name in names]
        order = [Task(s.name, s.classnames, s.templates) for s in specs]
        self._tasks = first_tasks(order, self.num_tasks, "benchmark.num_tasks")
        if self.decode_workers < 0:
            raise ValueError(f"benchmark.decode_workers={self.decode_workers} must be >= 0")

    def tasks(self) -> list[Task]:
        """The benchmark's tasks in order."""
        return list(self._tasks)

    def task_source(self, name: str) -> TaskSource:
        """Where task ``name``'s data is read from (see the module docstring)."""
        spec = dataset_spec(name)
        source = spec.source
        if name in self.sources:
            source = str(self.sources[name])
        elif self.data_root and (Path(self.data_root).expanduser() / name).exists():
            source = str(Path(self.data_root).expanduser() / name)
        return TaskSource(spec, source, self.revisions.get(name))

    def load_split(
        self, task: Task, split: str, cache_dir: str | Path, image_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 3, S, S) with S = ``image_size``, memory-mapped from the cache,
        and int64 labels of ``task``'s ``split`` (train, val or test)."""
        check_split(split)
        source = self.task_source(task.name)
        return load_split(source, split, Path(cache_dir), image_size, self.decode_workers)
