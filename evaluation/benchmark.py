"""The benchmark interface: an ordered list of tasks and their data splits.

A benchmark is built from its config (``conf/benchmark/*.yaml``, ``_target_``) and is
scored by a zoo's evaluator; a family package (``evaluation/<family>/``) implements it.
Splits: ``train`` (train minus val), ``val`` (10% of train, at most 5000, seed 0;
:mod:`evaluation.splits`) and ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    """One task of a benchmark: its name, class names and prompt templates (``{}`` is the
    class name)."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


@runtime_checkable
class Benchmark(Protocol):
    """What the pipelines need of a benchmark: its name (as written in result rows) and its
    tasks in order. Split loading is the family's (``load_split(task, split, ...)``),
    called by the evaluator of a zoo that can score this benchmark."""

    name: str

    def tasks(self) -> list[Task]: ...

    def load_split(self, task: Task, split: str, cache_dir: Any, **options: Any) -> Any: ...


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`; ``ValueError`` naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split


def first_tasks(order: Sequence[Task], num_tasks: int | None, where: str) -> list[Task]:
    """The first ``num_tasks`` tasks of ``order`` (all if ``None``); ``ValueError`` naming
    ``where`` (e.g. ``benchmark.num_tasks``) if out of range."""
    n = len(order) if num_tasks is None else int(num_tasks)
    if not 1 <= n <= len(order):
        raise ValueError(
            f"{where}={n} but the benchmark's family has {len(order)} tasks: give 1 to "
            f"{len(order)}"
        )
    return list(order[:n])


def select_tasks(tasks: Sequence[Task], names: Sequence[str] | None) -> list[Task]:
    """Restrict ``tasks`` to ``names`` (in benchmark order); unknown names list the valid ones."""
    if not names:
        return list(tasks)
    valid = [t.name for t in tasks]
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown task {name!r}; this benchmark has: {', '.join(valid)}")
    return [t for t in tasks if t.name in set(names)]
