"""One registry of merge methods for both regimes: ``@merge_method`` registers a function
together with its metadata (table label, reference, storage rule), ``merge`` dispatches.

Two kinds of method:

* ``task_vectors``: ``fn(tvs: TaskVectors, *, option=default, ...)`` over the task vectors
  ``tau_t = theta_t - theta_0`` of experts fine-tuned from one pretrained model; returns one
  merged, unscaled task vector, or one per task (``task_specific``). A method that needs
  more than the task vectors (data for Fisher or RegMean, the protocol's val selection for
  Consensus) declares it in ``needs`` and is called ``fn(tvs, context, *, ...)``.
* ``models``: ``fn(context, *, option=default, ...)`` over whole models trained from
  different initialisations; ``context`` (a :class:`merging.context.ModelContext`) holds
  the models' states, the architecture, its permutation spec, a source of merge batches
  and the BatchNorm-reset hook. Returns a merged state, a module (an ensemble), or one
  state per input model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from merging.storage import STORAGE_RULES
from merging.streaming import TaskVectors, with_aliases

StateDict = dict[str, torch.Tensor]
KINDS = ("task_vectors", "models")


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method and its metadata.

    ``label``: the row label in result tables; ``reference``: paper (and authors' code where
    behaviour follows it); ``storage``: a rule of :data:`merging.storage.STORAGE_RULES`;
    ``min_inputs``: fewest task vectors or models it merges; ``needs``: what it reads from
    a context besides its inputs (e.g. ``"data"``, ``"tall_lambdas"``).
    """

    name: str
    fn: Callable[..., Any]
    kind: str
    label: str
    reference: str
    storage: str
    task_specific: bool = False
    min_inputs: int = 1
    needs: tuple[str, ...] = ()

    @property
    def hparams(self) -> dict[str, object]:
        """Keyword options with their defaults (``inspect.Parameter.empty`` if required)."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    def check_options(
        self, options: Mapping[str, object], where: str = "", required: bool = True
    ) -> None:
        """Raise ``TypeError`` naming the option when ``options`` has an unknown key or (if
        ``required``) lacks a required one; ``where`` (e.g. ``method.ties.hparams``) prefixes
        the key path."""
        known = self.hparams
        prefix = f"{where}." if where else ""
        for name in sorted(set(options) - set(known)):
            raise TypeError(
                f"merge method {self.name!r} has no option {prefix}{name}; "
                f"its options: {', '.join(known) or 'none'}"
            )
        for name, default in known.items():
            if required and default is inspect.Parameter.empty and name not in options:
                raise TypeError(f"merge method {self.name!r} needs option {prefix}{name}")


METHODS: dict[str, MethodSpec] = {}


def merge_method(
    name: str,
    *,
    label: str,
    reference: str,
    storage: str = "merged",
    kind: str = "task_vectors",
    task_specific: bool = False,
    min_inputs: int = 1,
    needs: Sequence[str] = (),
) -> Callable[[Callable], Callable]:
    """Register ``fn`` under ``name`` with its metadata (see :class:`MethodSpec`)."""
    if kind not in KINDS:
        raise ValueError(f"merge method {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if storage not in STORAGE_RULES:
        raise ValueError(
            f"merge method {name!r}: storage must be one of {', '.join(STORAGE_RULES)}, "
            f"got {storage!r}"
        )

    def register(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"merge method {name!r} is registered twice")
        METHODS[name] = MethodSpec(
            name, fn, kind, label, reference, storage, task_specific, min_inputs, tuple(needs)
        )
        return fn

    return register


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; unknown names list the valid ones (``KeyError``)."""
    import merging.methods  # noqa: F401  (registers every method)

    if name not in METHODS:
        raise KeyError(f"unknown merge method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def merge(
    name: str,
    task_vectors: Sequence[Mapping[str, torch.Tensor]],
    *,
    device: str | torch.device | None = None,
    context: object = None,
    **hparams: object,
) -> StateDict | list[StateDict]:
    """Merge ``task_vectors`` with the ``task_vectors`` method ``name``.

    ``task_vectors`` are mappings from parameter name to tensor (plain dicts or lazy
    mappings that load a tensor when its key is read). Returns the merged task vector,
    unscaled (the caller forms ``theta_0 + alpha * tau``), or, for task-specific
    methods, one task vector per input task. Tied parameters (keys sharing one tensor, or
    declared by the task vectors' ``tied``) are merged once and returned as one tensor
    under each of their keys. ``device`` runs the per-tensor math there;
    results come back on the CPU in the input dtype. ``context`` is passed to methods
    that declare ``needs``. Raises ``TypeError`` for unknown or missing options and
    ``ValueError`` for too few task vectors or a missing context.
    """
    spec = method_spec(name)
    if spec.kind != "task_vectors":
        raise TypeError(f"merge method {name!r} merges whole models: use merge_models")
    spec.check_options(hparams)
    tvs = TaskVectors(task_vectors, device=device)
    if len(tvs) < spec.min_inputs:
        raise ValueError(
            f"merge method {name!r} needs at least {spec.min_inputs} task vectors, got {len(tvs)}"
        )
    if spec.needs and context is None:
        raise ValueError(f"merge method {name!r} needs a context with {list(spec.needs)}")
    try:
        out = spec.fn(tvs, context, **hparams) if spec.needs else spec.fn(tvs, **hparams)
    finally:
        tvs.release()  # a lazy output may keep tvs (magnitude pruning): not its read buffers
    if isinstance(out, list):
        return [with_aliases(o, tvs.aliases) for o in out]
    return with_aliases(out, tvs.aliases)


def merge_models(name: str, context: Any, **hparams: object) -> Any:
    """Merge the models of ``context`` (a :class:`merging.context.ModelContext`) with the
    ``models`` method ``name``; errors as :func:`merge`."""
    spec = method_spec(name)
    if spec.kind != "models":
        raise TypeError(f"merge method {name!r} merges task vectors: use merge")
    spec.check_options(hparams)
    if len(context.states) < spec.min_inputs:
        raise ValueError(
            f"merge method {name!r} needs at least {spec.min_inputs} models, "
            f"got {len(context.states)}"
        )
    return spec.fn(context, **hparams)
