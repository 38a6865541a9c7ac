"""Registry of merge methods: ``@merge_method`` registers, ``merge`` dispatches."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from merging.streaming import TaskVectors

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    ``task_specific`` methods return one task vector per input task (in order);
    the others return one merged, unscaled task vector. ``needs_data`` methods take
    data through their keyword arguments (tensors or callables; never paths).
    """

    name: str
    fn: Callable[..., StateDict | list[StateDict]]
    task_specific: bool = False
    min_tasks: int = 1
    needs_data: bool = False

    @property
    def hparams(self) -> dict[str, object]:
        """Keyword hyperparameters with their defaults (``inspect.Parameter.empty`` if required)."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


METHODS: dict[str, MethodSpec] = {}


def merge_method(
    name: str, *, task_specific: bool = False, min_tasks: int = 1, needs_data: bool = False
) -> Callable[[Callable], Callable]:
    """Register ``fn(tvs: TaskVectors, *, hparam=default, ...)`` under ``name``."""

    def register(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"merge method {name!r} is registered twice")
        METHODS[name] = MethodSpec(name, fn, task_specific, min_tasks, needs_data)
        return fn

    return register


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; unknown names list the valid ones."""
    import merging.methods  # noqa: F401  (registers every method)

    if name not in METHODS:
        raise KeyError(f"unknown merge method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def merge(
    name: str,
    task_vectors: Sequence[Mapping[str, torch.Tensor]],
    *,
    device: str | torch.device | None = None,
    **hparams: object,
) -> StateDict | list[StateDict]:
    """Merge ``task_vectors`` with method ``name``.

    ``task_vectors`` are mappings from parameter name to tensor (plain dicts or lazy
    mappings that load a tensor when its key is read). Returns the merged task vector,
    unscaled (the caller forms ``theta_0 + alpha * tau``), or, for task-specific
    methods, one task vector per input task. ``device`` runs the per-tensor math there;
    results come back on the CPU in the input dtype.
    """
    spec = method_spec(name)
    known = spec.hparams
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise TypeError(
            f"merge method {name!r} has no option {unknown[0]!r}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in hparams]
    if missing:
        raise TypeError(f"merge method {name!r} needs option {missing[0]!r}")
    tvs = TaskVectors(task_vectors, device=device)
    if len(tvs) < spec.min_tasks:
        raise ValueError(
            f"merge method {name!r} needs at least {spec.min_tasks} task vectors, got {len(tvs)}"
        )
    return spec.fn(tvs, **hparams)
