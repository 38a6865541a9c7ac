"""The sandbox benchmark (``conf/benchmark/sandbox{8,14,20}.yaml``, named ``sandbox<n>`` for
what it holds): the first ``num_tasks`` procedurally generated tasks
(:mod:`evaluation.sandbox.tasks`), each with ``n_train`` training images (val = a random
10% of them, the experts train on the rest) and ``n_test`` test images
(:mod:`evaluation.sandbox.data`). The sandbox zoo's experts are trained on these same
splits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from evaluation.benchmark import Task, first_tasks
from evaluation.sandbox import data
from evaluation.sandbox.config import SandboxBenchmarkConfig
from evaluation.sandbox.tasks import GENERATORS, IMAGE_SIZE
from evaluation.schemas import check_fields


@dataclass
class SandboxBenchmark(SandboxBenchmarkConfig):
    """The benchmark of its config (fields: :class:`SandboxBenchmarkConfig`); bad values
    fail on construction, naming the key."""

    def __post_init__(self) -> None:
        check_fields(self, SandboxBenchmarkConfig, "benchmark")
        order = [Task(g.name, g.classnames, g.templates) for g in GENERATORS]
        self._tasks = first_tasks(order, self.num_tasks, "benchmark.num_tasks")
        for key in ("n_train", "n_test"):
            if getattr(self, key) < data.MIN_SIZE:
                raise ValueError(f"benchmark.{key}={getattr(self, key)} must be >= {data.MIN_SIZE}")
        derived = f"sandbox{len(self._tasks)}"  # conf/base/benchmark/sandbox.yaml derives it
        if self.name != derived and re.fullmatch(r"sandbox\d+", self.name):
            raise ValueError(
                f"benchmark.name={self.name!r} does not say what the benchmark holds "
                f"({len(self._tasks)} tasks); leave it to the config (it derives {derived!r}) "
                "or choose a name of your own"
            )

    def tasks(self) -> list[Task]:
        """The benchmark's tasks in canonical order."""
        return list(self._tasks)

    def load_split(
        self,
        task: Task,
        split: str,
        cache_dir: str | os.PathLike | None,
        image_size: int = IMAGE_SIZE,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 3, 32, 32) and int64 labels of ``task``'s ``split``; a model
        expecting another ``image_size`` is refused."""
        if image_size != IMAGE_SIZE:
            raise ValueError(
                f"benchmark {self.name!r} has {IMAGE_SIZE}x{IMAGE_SIZE} images; the model "
                f"expects {image_size}x{image_size}"
            )
        return data.load_split(
            task.name, split, cache_dir, n_train=self.n_train, n_test=self.n_test
        )
