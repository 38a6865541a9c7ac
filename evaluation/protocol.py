"""The evaluation protocol of the TALL masks paper (Wang et al., ICML 2024), written once.

For a method with options ``hparams``, a search grid ``G`` (merged once per point) and a
scaling grid ``A`` (applied without re-merging, ``theta_0 + alpha * tau``):

* every ``(g, alpha)`` in ``G x A`` is scored on every task's val split;
* ``joint`` selection picks the point maximising the average normalised val accuracy
  (Task Arithmetic, TIES, Consensus: alpha from {0.1, ..., 1.0}); ``per_task`` selection
  lets each task pick the point maximising its own val accuracy (TALL masks' lambda);
* test accuracy is reported at the chosen point(s), absolute and normalised
  (``100 * acc_merged / acc_expert``, the expert being the task's own fine-tuned model
  on the same split), per task and averaged.

Ties between grid points are broken by grid order (first wins). Each method's cost is
recorded too (split ``merge``): mean wall time of its merges (``merge_seconds``) and their
peak extra memory (``merge_peak_mib``, :mod:`evaluation.resources`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from evaluation.resources import Measured
from evaluation.results import AVERAGE, Row, hparams_key
from evaluation.zoo import Evaluator
from merging import MethodSpec, merge, method_spec
from merging.task_data import stand_in

SELECTIONS = ("joint", "per_task")
KIND_PIPELINES = {"task_vectors": "task_vectors", "models": "different_init"}


def check_distinct(values: Sequence[Any], where: str) -> None:
    """Raise ``ValueError`` naming ``where`` (e.g. ``protocol.alphas``) and the value if
    ``values`` (a grid) repeats one: its points would be merged and written twice."""
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ValueError(f"{where} repeats {value!r}: list each value once, got {list(values)}")


def scaling_grid(values: Sequence[Any], where: str) -> tuple[float, ...]:
    """``values`` as floats, checked: not empty, positive and finite, distinct;
    ``ValueError`` naming ``where`` (e.g. ``method.ties.alphas``) otherwise."""
    alphas = tuple(float(a) for a in values)
    if not alphas:
        raise ValueError(f"{where} is empty: give at least one scaling coefficient")
    if not all(0 < a < math.inf for a in alphas):  # NaN fails this too
        raise ValueError(f"{where} must be positive and finite, got {list(alphas)}")
    check_distinct(alphas, where)
    return alphas


class Labelled(Protocol):
    """A configured method of either regime: its ``method.<key>`` and its table label."""

    key: str
    label: str


M = TypeVar("M", bound=Labelled)


def check_labels(methods: Sequence[M]) -> list[M]:
    """``methods`` (each with ``key`` and ``label``), checked to have distinct labels: rows
    and tables tell methods apart by label, so two with one label would be averaged into one
    table row. ``ValueError`` naming both ``method.<key>`` otherwise."""
    labels: dict[str, str] = {}
    for m in methods:
        if m.label in labels:
            raise ValueError(
                f"method.{m.key} and method.{labels[m.label]} share the label {m.label!r}: "
                f"give one a distinct label (method.{m.key}.label=...)"
            )
        labels[m.label] = m.key
    return list(methods)


def configured_spec(key: str, cfg: Mapping[str, Any], kind: str) -> MethodSpec:
    """The registered method of config ``method.<key>``, checked: it exists, is of ``kind``,
    its ``hparams`` and ``search`` keys are all options of it (required ones given in
    either) and none is in both, and each ``search`` grid is a non-empty list of distinct
    values; ``ValueError`` naming the key path otherwise."""
    where = f"method.{key}"
    try:
        spec = method_spec(cfg["fn"])
    except KeyError as err:
        raise ValueError(f"{where}.fn: {err.args[0]}") from None
    if spec.kind != kind:
        raise ValueError(
            f"{where}.fn: {spec.name!r} is a {spec.kind!r} method; this pipeline runs "
            f"{kind!r} methods: choose pipeline={KIND_PIPELINES[spec.kind]}"
        )
    search = cfg.get("search") or {}
    try:
        spec.check_options(search, f"{where}.search", required=False)
        spec.check_options({**(cfg.get("hparams") or {}), **search}, f"{where}.hparams")
    except TypeError as err:
        raise ValueError(str(err)) from None
    for name in sorted(set(cfg.get("hparams") or {}) & set(search)):
        raise ValueError(f"{where}: option {name!r} is both in hparams and in search")
    for name, values in search.items():
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ValueError(f"{where}.search.{name} must be a non-empty list")
        check_distinct(values, f"{where}.search.{name}")
    return spec


@dataclass(frozen=True)
class Method:
    """One configured method of the task-vector regime: a registered merge function, its
    options, its search grid, selection rule and scaling grid. ``key`` is the config's
    name (``method.<key>``); ``label`` the table row."""

    key: str
    label: str
    fn: str
    hparams: dict[str, Any] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    select: str = "joint"
    alphas: tuple[float, ...] = (1.0,)
    provenance: dict[str, Any] = field(default_factory=dict)  # written into result rows

    @classmethod
    def from_config(cls, key: str, cfg: Mapping[str, Any]) -> Method:
        """From a ``method.<key>`` config (schema ``experiments.config.MethodConfig``);
        errors name the key path at fault (``method.<key>.hparams.<option>``)."""
        where = f"method.{key}"
        search = dict(cfg.get("search") or {})
        spec = configured_spec(key, cfg, "task_vectors")
        hparams = dict(cfg.get("hparams") or {})
        select = cfg.get("select", "joint")
        if select not in SELECTIONS:
            raise ValueError(
                f"{where}.select must be one of {', '.join(SELECTIONS)}, got {select!r}"
            )
        alphas = scaling_grid(cfg.get("alphas", (1.0,)), f"{where}.alphas")
        return cls(
            key=key,
            label=str(cfg.get("label") or spec.label),
            fn=spec.name,
            hparams=hparams,
            search={k: list(v) for k, v in search.items()},
            select=select,
            alphas=alphas,
        )

    def check_options(self, num_tasks: int, **substitutes: Any) -> None:
        """Merge ``num_tasks`` tiny random task vectors (the run's count: a method that
        needs more tasks fails here) at every search point, so that out-of-range options
        fail (naming the option) before any long computation; ``substitutes`` replace
        options resolved later in the run (Consensus' ``lam`` from TALL masks).
        The stand-in's key is named like a transformer block's weight, so that methods
        that read layer indices from key names (LiNeS) can run on it; methods that need
        data get tiny stand-in task data over a linear layer of that name
        (:func:`merging.task_data.stand_in`)."""
        generator = torch.Generator().manual_seed(0)
        key = "transformer.resblocks.0.mlp.c_fc.weight"
        taus = [{key: torch.randn(4, 3, generator=generator)} for _ in range(num_tasks)]
        needs_data = "data" in method_spec(self.fn).needs
        for point in self.grid():
            context = stand_in(key, (4, 3), num_tasks) if needs_data else None
            try:
                merge(self.fn, taus, context=context, **{**self.hparams, **point, **substitutes})
            except (ValueError, TypeError, KeyError) as err:
                raise ValueError(f"method.{self.key}: {err}") from None
            except Exception as err:  # a method's own failure: keep it, say where it arose
                err.add_note(f"raised by method.{self.key} on stand-in task vectors at {point}")
                raise

    def grid(self) -> list[dict[str, Any]]:
        """The search points in order (one empty point if nothing is searched)."""
        names = list(self.search)
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*self.search.values())
        ]


Scores = dict[str, float]  # task -> accuracy (%)


class Scorer:
    """Scores merge outputs with an :class:`Evaluator`, memoised per (method, point, alpha,
    split, task), so nothing is evaluated twice in a run."""

    def __init__(self, evaluator: Evaluator, tasks: Sequence[str]) -> None:
        self.evaluator, self.tasks = evaluator, list(tasks)
        self._memo: dict[tuple[str, str, float, str], Scores] = {}

    def scores(
        self,
        fn: str,
        point: Mapping[str, Any],
        output: Callable[[], Any],
        alpha: float,
        split: str,
        tasks: Sequence[str] | None = None,
    ) -> Scores:
        """Accuracy on ``tasks`` (default: all) of ``theta_0 + alpha * out``, ``out = output()``
        (``out[i]`` for the i-th task with task-specific methods); ``output`` is called only
        if some score is not memoised yet."""
        tasks = self.tasks if tasks is None else list(tasks)
        memo = self._memo.setdefault((fn, hparams_key(point), alpha, split), {})
        todo = [t for t in tasks if t not in memo]
        if todo:
            out = output()
            if isinstance(out, list):
                for task in todo:
                    self.evaluator.load(out[self.tasks.index(task)], alpha)
                    memo[task] = self.evaluator.accuracy(task, split)
            else:
                self.evaluator.load(out, alpha)
                memo.update({task: self.evaluator.accuracy(task, split) for task in todo})
        return {task: memo[task] for task in tasks}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def evaluate_method(
    method: Method,
    task_vectors: Sequence[Mapping],
    scorer: Scorer,
    expert: Mapping[str, Scores] | None,
    make_row: Callable[..., Row],
    device: str | None = None,
    on_point: Callable[[], None] | None = None,
    test: bool = True,
    context: object = None,
) -> tuple[list[Row], dict[str, dict[str, Any]]]:
    """Run the protocol for one method; returns its val (every point) and test rows, and
    the setting chosen on val for each task (options and ``alpha``). ``test=False`` stops
    after the val selection (no test rows). ``context`` is passed to methods that declare
    ``needs`` (e.g. :class:`merging.task_data.TaskData` for data-based methods).

    ``expert[split][task]`` are the denominators of normalised accuracy; ``None`` means the
    method is the experts themselves (normalised accuracy 100 by definition).
    """
    tasks = scorer.tasks
    points = method.grid()
    outputs: dict[int, Any] = {}

    costs: list[Measured] = []

    def output(i: int):
        if i not in outputs:
            outputs.clear()  # keep one merge output in memory at a time
            with Measured() as cost:
                outputs[i] = merge(
                    method.fn, task_vectors, device=device, context=context,
                    **method.hparams, **points[i],
                )  # fmt: skip
            costs.append(cost)
        return outputs[i]

    def normalised(split: str, scores: Scores) -> Scores:
        """``100 * acc / expert acc`` per task (0 where the expert scores 0); the experts
        themselves: 100 by definition (also where an expert scores 0)."""
        if expert is None:
            return dict.fromkeys(scores, 100.0)
        ref = expert[split]
        return {t: 100.0 * v / ref[t] if ref[t] else 0.0 for t, v in scores.items()}

    def rows_for(setting: Mapping[str, Any], split: str, scores: Scores) -> list[Row]:
        """Accuracy and normalised accuracy rows of ``scores``, plus their averages when
        ``scores`` covers every task."""
        norm = normalised(split, scores)
        key = hparams_key({**setting, **method.provenance})
        complete = len(scores) == len(tasks)
        return [
            make_row(method.label, key, task, split, metric, value)
            for metric, values in (("accuracy", scores), ("normalized_accuracy", norm))
            for task, value in [
                *values.items(),
                *[(AVERAGE, mean(list(values.values())))] * complete,
            ]
        ]

    val: dict[tuple[int, float], Scores] = {}
    rows: list[Row] = []
    for i, point in enumerate(points):
        setting = {**method.hparams, **point}
        for alpha in method.alphas:
            val[i, alpha] = scorer.scores(method.fn, setting, lambda i=i: output(i), alpha, "val")
            rows += rows_for({**setting, "alpha": alpha}, "val", val[i, alpha])
            if on_point:
                on_point()

    candidates = list(val)  # grid order: ties go to the first point
    if method.select == "joint":
        best = max(candidates, key=lambda c: mean(list(normalised("val", val[c]).values())))
        chosen = {t: best for t in tasks}
    else:
        chosen = {t: max(candidates, key=lambda c, t=t: val[c][t]) for t in tasks}
    settings = {
        t: {**method.hparams, **points[chosen[t][0]], "alpha": chosen[t][1]} for t in tasks
    }
    if not test:
        return rows, settings

    scores_test: Scores = {}
    for i, alpha in sorted(set(chosen.values()), key=candidates.index):
        setting = {**method.hparams, **points[i], "alpha": alpha}
        these = [t for t in tasks if chosen[t] == (i, alpha)]
        scores = scorer.scores(method.fn, setting, lambda i=i: output(i), alpha, "test", these)
        scores_test.update(scores)
        rows += [r for r in rows_for(setting, "test", scores) if r.task != AVERAGE]
    if method.select == "joint":
        i, alpha = chosen[tasks[0]]
        summary = {**method.hparams, **points[i], "alpha": alpha}
    else:
        summary = {**method.hparams, **{k: "per_task" for k in [*method.search, "alpha"]}}
    rows += [r for r in rows_for(summary, "test", scores_test) if r.task == AVERAGE]
    if costs:  # merges of this method (memoised points cost nothing)
        key = hparams_key({**summary, **method.provenance})
        rows += [
            make_row(method.label, key, AVERAGE, "merge", "merge_seconds",
                     sum(c.seconds for c in costs) / len(costs)),
            make_row(method.label, key, AVERAGE, "merge", "merge_peak_mib",
                     max(c.peak_mib for c in costs)),
        ]  # fmt: skip
    return rows, settings
