"""The real-text benchmark (``conf/benchmark/text_real8.yaml``, named ``text_real<n>`` for
what it holds): classification tasks built from WordNet 3.0 and fortune files
(:mod:`evaluation.real.text_tasks`), each split into disjoint, class-balanced train / val /
test texts. A task's splits are drawn once from the converted sources and cached as JSON
under ``<cache>/real_text/`` (:class:`evaluation.cache.Manifest`), keyed by the task, the
sizes, the seed and the sources' checksums.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.benchmark import Task, check_split, first_tasks, select_tasks
from evaluation.cache import Manifest, cache_root, json_digest, locked
from evaluation.real import sources
from evaluation.real.config import RealTextBenchmarkConfig
from evaluation.real.text_tasks import TextTaskSpec, draw, labelled, task_order, task_specs
from evaluation.schemas import check_fields

CACHE_VERSION = 1


@dataclass
class RealTextBenchmark(RealTextBenchmarkConfig):
    """The benchmark of its config (fields: :class:`RealTextBenchmarkConfig`); bad values
    fail on construction, naming the key."""

    def __post_init__(self) -> None:
        check_fields(self, RealTextBenchmarkConfig, "benchmark")
        specs = task_specs()
        order = [Task(n, specs[n].classnames, ()) for n in task_order()]
        if self.task_names:
            if self.num_tasks is not None:
                raise ValueError("benchmark.task_names and benchmark.num_tasks: give one of them")
            self._tasks = select_tasks(order, self.task_names)
        else:
            self._tasks = first_tasks(order, self.num_tasks, "benchmark.num_tasks")
        self._specs = {t.name: specs[t.name] for t in self._tasks}
        most = max(len(t.classnames) for t in self._tasks)
        for key, least in (("n_train", max(2 * most, 10)), ("n_test", 2 * most)):
            if getattr(self, key) < least:
                raise ValueError(
                    f"benchmark.{key}={getattr(self, key)} must be >= {least} (two texts per "
                    "class of the largest task; val, 10% of train, needs one)"
                )
        derived = f"text_real{len(self._tasks)}"
        if self.name != derived and re.fullmatch(r"text_real\d+", self.name):
            raise ValueError(
                f"benchmark.name={self.name!r} does not say what the benchmark holds "
                f"({len(self._tasks)} tasks); leave it to the config (it derives {derived!r}) "
                "or choose a name of your own"
            )
        self._loaded: dict[Path, dict] = {}

    def tasks(self) -> list[Task]:
        """The benchmark's tasks in order."""
        return list(self._tasks)

    def spec(self, task: str) -> TextTaskSpec:
        return self._specs[task]

    def task_file(self, task: Task, cache_dir: str | os.PathLike | None) -> Path:
        """The cached splits of ``task`` (drawn on first use from the converted source;
        ``SourceMissing`` names the command that installs a missing source)."""
        spec = self._specs[task.name]
        source = sources.get_source(spec.source)
        identity = {
            "task": spec.as_dict(),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seed": self.seed,
            "source": {f.path: f.sha256 for f in source.files},
        }
        root = cache_root(cache_dir) / "real_text"
        name = f"{task.name}-{json_digest(identity)[:16]}.json"
        with locked(root):
            manifest = Manifest(root, {"version": CACHE_VERSION}, "real-text benchmark")
            if not manifest.trusted(name):
                data = sources.read_json(spec.source, cache_dir)
                splits = draw(spec, labelled(spec, data), self.n_train, self.n_test, self.seed)
                payload = {"task": task.name, "classes": list(spec.classnames), **splits}
                with manifest.writing(name, task=task.name) as tmp:
                    tmp.write_text(json.dumps(payload, ensure_ascii=False))
        return root / name

    def load_split(
        self, task: Task, split: str, cache_dir: str | os.PathLike | None
    ) -> tuple[list[str], torch.Tensor]:
        """(texts, int64 labels) of ``task``'s ``split`` (train, val, test)."""
        check_split(split)
        path = self.task_file(task, cache_dir)
        if path not in self._loaded:
            self._loaded[path] = json.loads(path.read_text())
        data = self._loaded[path][split]
        return list(data["text"]), torch.tensor(data["label"], dtype=torch.long)
