"""The sandbox benchmark (``conf/benchmark/sandbox{8,14,20}.yaml``, named ``sandbox<n>`` for
what it holds): the first ``num_tasks`` sandbox tasks (:mod:`evaluation.sandbox.tasks`;
with ``real_images``, real MNIST and Fashion-MNIST in place of the generated digits and
arrows, :mod:`evaluation.sandbox.real_tasks`), each with ``n_train`` training images (val =
a random 10% of them, the experts train on the rest) and ``n_test`` test images
(:mod:`evaluation.sandbox.data`). The sandbox zoo's experts are trained on these same
splits, and it pretrains on every task of the resolved order (:meth:`task_order`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from evaluation.benchmark import Task, first_tasks
from evaluation.sandbox import data
from evaluation.sandbox.config import SandboxBenchmarkConfig
from evaluation.sandbox.real_tasks import RealImageTask, SandboxTask, task_order
from evaluation.sandbox.tasks import IMAGE_SIZE
from evaluation.schemas import check_fields


@dataclass
class SandboxBenchmark(SandboxBenchmarkConfig):
    """The benchmark of its config (fields: :class:`SandboxBenchmarkConfig`); bad values
    fail on construction, naming the key, and so does a missing real dataset that
    ``real_images=true`` requires (with its install command)."""

    def __post_init__(self) -> None:
        check_fields(self, SandboxBenchmarkConfig, "benchmark")
        for key in ("n_train", "n_test"):
            if getattr(self, key) < data.MIN_SIZE:
                raise ValueError(f"benchmark.{key}={getattr(self, key)} must be >= {data.MIN_SIZE}")
        self._order = task_order(self.real_images, self.cache_dir, "benchmark.real_images")
        names = [t.name for t in self._order]
        if self.task_names is not None and list(self.task_names) != names:
            raise ValueError(
                f"benchmark.task_names={list(self.task_names)} is derived from real_images and "
                f"the cache (here {names}); do not set it"
            )
        self.real_images = str(self.real_images).lower()
        self._by_name = {t.name: t for t in self._order}
        order = [Task(t.name, t.classnames, t.templates) for t in self._order]
        self._tasks = first_tasks(order, self.num_tasks, "benchmark.num_tasks")
        derived = f"sandbox{len(self._tasks)}"  # conf/base/benchmark/sandbox.yaml derives it
        if self.name != derived and re.fullmatch(r"sandbox\d+", self.name):
            raise ValueError(
                f"benchmark.name={self.name!r} does not say what the benchmark holds "
                f"({len(self._tasks)} tasks); leave it to the config (it derives {derived!r}) "
                "or choose a name of your own"
            )
        for task in self._tasks:  # a real dataset too small for the sizes fails here
            source = self._by_name[task.name]
            if isinstance(source, RealImageTask):
                for part in ("train", "test"):
                    n = getattr(self, f"n_{part}")
                    source.sample(n, 0, part=part, where=f"benchmark.n_{part}")

    def tasks(self) -> list[Task]:
        """The benchmark's tasks in canonical order."""
        return list(self._tasks)

    def task_order(self) -> tuple[SandboxTask, ...]:
        """Every sandbox task of the resolved order (generated or real), of which the
        benchmark holds the first ``num_tasks``; the zoo pretrains on all of them."""
        return self._order

    def sandbox_task(self, name: str) -> SandboxTask:
        """The generated or real task ``name``; ``KeyError`` listing the valid names."""
        try:
            return self._by_name[name]
        except KeyError:
            valid = ", ".join(self._by_name)
            raise KeyError(f"unknown sandbox task {name!r}; valid: {valid}") from None

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
            self.sandbox_task(task.name), split, cache_dir, n_train=self.n_train,
            n_test=self.n_test,
        )  # fmt: skip
