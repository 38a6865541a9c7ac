"""The zoo interfaces, one per regime. A zoo is built from its config (``conf/model/*.yaml``,
``_target_``): data (architecture, checkpoint ids) plus one loader per family, in a family
package ``evaluation/<family>/``. The core names no family.

* Task-vector regime (:class:`TaskVectorZoo`): ``zoo.load(benchmark, tasks, env)`` returns
  :class:`Experts`: the pretrained weights ``theta_0`` of the merged part, one expert per
  task, the parameter counts for the storage column, and an evaluator factory, so the
  protocol never assumes a model type (image encoder + head, T5 + rank classification).
* Different-initialisation regime (:class:`InitZoo`): ``zoo.load(benchmark, setting, env)``
  returns base models trained from different seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from evaluation.benchmark import Benchmark, Task
from merging.task_data import TaskData

Tensor = torch.Tensor
StateDict = Mapping[str, Tensor]


def check_regime(zoo: object, regime: str, where: str, hint: str | None = None) -> None:
    """Raise ``ValueError`` unless ``zoo`` (built from config ``where``) serves ``regime``
    (``task_vectors`` or ``different_init``), ending with ``hint`` (default: the pipeline
    that fits it)."""
    found = getattr(zoo, "regime", None)
    if found != regime:
        hint = hint or (f"choose pipeline={found}" if found else "it is not a zoo")
        raise ValueError(f"{where} builds a zoo for the {found!r} regime, not {regime!r}: {hint}")


@dataclass(frozen=True)
class Env:
    """Where and how a run computes: cache root, device (``cpu``, ``cuda``, ``cuda:N``),
    whether progress bars are shown, and how many bytes of input an evaluator keeps on the
    device (``None``: its default)."""

    cache_dir: Path
    device: str = "cpu"
    progress: bool = False
    input_cache_bytes: int | None = None


@torch.no_grad()
def write_task_vector(
    params: Mapping[str, Tensor],
    pretrained: Mapping[str, Tensor],
    tau: StateDict | None,
    alpha: float = 1.0,
) -> None:
    """Write ``theta_0 + alpha * tau`` into a model's ``params`` in place (the evaluators'
    ``load``; no re-merge per alpha). ``pretrained`` holds ``theta_0`` on the params'
    device; keys missing from ``tau``, non-float entries and ``tau=None`` get ``theta_0``;
    a ``tau`` entry of another shape raises ``ValueError`` naming the key.

    Written without temporaries: ``p = alpha * tau`` then ``p += theta_0``, the same float
    operations (and so the same bits) as ``theta_0 + alpha * tau``."""
    for key, p in params.items():
        base = pretrained[key]
        if tau is not None and key in tau and torch.is_floating_point(base):
            x = tau[key]
            if x.shape != base.shape:
                raise ValueError(
                    f"task vector key {key!r} has shape {tuple(x.shape)}, the model's "
                    f"parameter {tuple(base.shape)}"
                )
            torch.mul(x.to(base.device, base.dtype), alpha, out=p).add_(base)
        else:
            p.copy_(base)


@runtime_checkable
class Evaluator(Protocol):
    """Scores ``theta_0 + alpha * tau`` on a task's split without re-merging."""

    def load(self, tau: StateDict | None, alpha: float = 1.0) -> None:
        """Set the model's merged part to ``theta_0 + alpha * tau`` (``None``: ``theta_0``)."""

    def accuracy(self, task: str, split: str) -> float:
        """The benchmark's metric (%, e.g. top-1 accuracy) of the loaded weights."""


@dataclass
class Experts:
    """A loaded task-vector zoo.

    ``pretrained`` and each ``experts[task]`` are state dicts of the merged part (lazy
    mappings allowed); ``param_counts = (N, N_m)``: parameters of the stored model and of
    the merged part (:mod:`merging.storage`); ``evaluator(tasks, batch_size, env)`` scores
    merged weights on the benchmark the zoo was loaded for; ``unmerged_entries``: entries
    that the authors' flattened checkpoints hold beyond the merged part and count in their
    top-k (CLIP ``ImageEncoder``: the text-side entries; the option ``extra_entries:
    from_zoo`` of the top-k methods reads it, see results/fidelity.md).

    ``task_data(tasks, split, examples, env)``: the context of data-based merge methods
    (``needs=("data",)``), a :class:`merging.task_data.TaskData` holding the merged part as
    a module, ``theta_0``, ``examples`` inputs per task of ``split`` (``None``: all) and
    each task's head; ``None`` if the zoo cannot provide data (the pipeline then refuses
    such methods, naming the model).
    """

    name: str
    pretrained: StateDict
    experts: Mapping[str, StateDict]
    param_counts: tuple[int, int]
    evaluator: Callable[[Sequence[Task], int, Env], Evaluator]
    unmerged_entries: int = 0
    task_data: Callable[[Sequence[Task], str, int | None, Env], TaskData] | None = None


@runtime_checkable
class TaskVectorZoo(Protocol):
    """A pretrained model and experts fine-tuned from it, one per task
    (``regime = "task_vectors"``)."""

    name: str
    regime: str

    def load(self, benchmark: Benchmark, tasks: Sequence[Task], env: Env) -> Experts: ...


@runtime_checkable
class InitZoo(Protocol):
    """Base models of one architecture trained from different initialisations
    (``regime = "different_init"``)."""

    name: str
    regime: str

    def load(self, benchmark: Any, setting: str, env: Env) -> Any: ...
