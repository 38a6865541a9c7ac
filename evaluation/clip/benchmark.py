"""The vision benchmark of the TALL masks paper (Wang et al., ICML 2024) and Task Arithmetic
(Ilharco et al., ICLR 2023), data from the Hugging Face hub or local copies
(``conf/benchmark/{tall8,tall14,tall20,ta8}.yaml``).

The tasks are the first ``num_tasks`` of an order (:data:`evaluation.clip.tasks.ORDERS`)
or of an explicit ``task_names`` list; the name says which
(:func:`evaluation.clip.config.vision_benchmark_name`). Where a task's data comes from:
``sources[task]`` (a hub dataset id or a local path) if set, else ``<data_root>/<task>`` if
that exists, else the task's hub id; two tasks never read one source. ``val_from``: the split
val is held out of (``train``, the paper's; ``test`` for experts fine-tuned on all of train);
``trust_label_order``: tasks whose dataset labels are taken in the task's class order
unchecked. Decoding, label matching and caching: :mod:`evaluation.clip.datasets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.benchmark import Task, check_split, first_tasks
from evaluation.clip.config import HubVisionBenchmarkConfig, vision_benchmark_name
from evaluation.clip.datasets import VAL_FROM, TaskSource, load_split
from evaluation.clip.tasks import DATASETS, ORDERS, dataset_spec
from evaluation.schemas import check_fields


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
        for key in ("task_names", "sources", "revisions", "trust_label_order"):
            unknown = sorted(set(getattr(self, key) or ()) - set(DATASETS))
            if unknown:
                raise ValueError(
                    f"benchmark.{key} names unknown task {unknown[0]!r}; "
                    f"valid: {', '.join(DATASETS)}"
                )
        if self.task_names and self.num_tasks is not None and self.num_tasks > len(names):
            raise ValueError(
                f"benchmark.num_tasks={self.num_tasks} but benchmark.task_names lists "
                f"{len(names)} tasks; set benchmark.num_tasks=null (all listed tasks) or at "
                f"most {len(names)}"
            )
        specs = [dataset_spec(name) for name in names]
        order = [Task(s.name, s.classnames, s.templates) for s in specs]
        self._tasks = first_tasks(order, self.num_tasks, "benchmark.num_tasks")
        if self.decode_workers < 0:
            raise ValueError(f"benchmark.decode_workers={self.decode_workers} must be >= 0")
        if self.val_from not in VAL_FROM:
            raise ValueError(
                f"benchmark.val_from={self.val_from!r} is unknown; valid: {', '.join(VAL_FROM)}"
            )
        self._check_name()
        self._check_sources()

    def _check_name(self) -> None:
        """A name in the form of a derived one (``tall8``, ``ta8``) must be the derived one:
        ``name: tall8`` with ``num_tasks: 3`` would label results with tasks they lack."""
        derived = vision_benchmark_name(self.order, self.num_tasks, self.task_names, self.val_from)
        if self.name != derived and re.fullmatch(
            rf"({'|'.join(ORDERS)})\d+(-val_from_test)?", self.name
        ):
            raise ValueError(
                f"benchmark.name={self.name!r} does not say what the benchmark holds "
                f"({len(self._tasks)} tasks: {', '.join(t.name for t in self._tasks)}); leave "
                f"it to the config (it derives {derived!r}) or choose a name of your own"
            )

    def _check_sources(self) -> None:
        """Two tasks reading one data source would score one task on another's data."""
        seen: dict[str, str] = {}
        for task in self._tasks:
            source = self.task_source(task.name).source
            path = Path(source).expanduser()
            key = str(path.resolve()) if path.exists() else source
            if key in seen:
                raise ValueError(
                    f"tasks {seen[key]} and {task.name} would both read data source {source!r} "
                    f"(benchmark.sources / benchmark.data_root); give each task its own"
                )
            seen[key] = task.name

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
        return TaskSource(
            spec,
            source,
            self.revisions.get(name),
            val_from=self.val_from,
            trust_label_order=name in self.trust_label_order,
        )

    def load_split(
        self, task: Task, split: str, cache_dir: str | Path, image_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 3, S, S) with S = ``image_size``, memory-mapped from the cache,
        and int64 labels of ``task``'s ``split`` (train, val or test)."""
        check_split(split)
        source = self.task_source(task.name)
        return load_split(source, split, Path(cache_dir), image_size, self.decode_workers)
