"""The NLP tasks of the T5 family, as data (``evaluation/t5/data/tasks.json``): where each
task's data lives, which split is train / val / test, how its answer is read, its prompt
source and its metric. The mixtures of TIES-Merging (Yadav et al., NeurIPS 2023;
prateeky2806/ties-merging ``src/data/dataset_mixtures.py``) and FusionBench's GLUE tasks
(Tang et al., tanganke/fusion_bench) are the benchmark configs' ``task_names``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
METRICS = ("accuracy", "squad", "exact_match", "spearman")
GENERATIVE = ("squad", "exact_match", "spearman")  # scored from greedy generations


@dataclass(frozen=True)
class TaskSpec:
    """One task (module docstring; field meanings: the ``_about`` of tasks.json)."""

    name: str
    dataset: str
    subset: str | None
    splits: dict[str, str]
    val: str
    label: dict[str, Any]
    prompt: str
    metric: str
    max_new_tokens: int = 0
    note: str | None = None

    @property
    def generative(self) -> bool:
        """Whether the task is scored from generated text (else rank classification)."""
        return self.metric in GENERATIVE

    def hub_split(self, split: str, val_from: str = "train") -> str:
        """The dataset split that ``split`` (train, val or test) is read from; ``val_from``
        ``test`` draws a ``train_draw`` task's val from its test split instead."""
        if split == "val" and self.val == "train_draw":
            return self.splits["train" if val_from == "train" else "test"]
        if split == "val" and self.val != "heldout":
            return self.val
        return self.splits["train" if split == "train" else "test"]


@functools.cache
def _specs() -> dict[str, TaskSpec]:
    raw = json.loads((DATA / "tasks.json").read_text())
    specs = {name: TaskSpec(name=name, **entry) for name, entry in raw.items() if name[0] != "_"}
    for spec in specs.values():
        if spec.metric not in METRICS:
            raise ValueError(f"tasks.json: task {spec.name} has unknown metric {spec.metric!r}")
    return specs


def task_names() -> list[str]:
    """Every known task, in the data file's order."""
    return list(_specs())


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``; ``ValueError`` listing the known tasks otherwise."""
    specs = _specs()
    if name not in specs:
        raise ValueError(f"unknown T5 task {name!r}; known: {', '.join(specs)}")
    return specs[name]
