"""The task-vector pipeline: a zoo of experts fine-tuned from one pretrained model, merge
methods, the TALL masks protocol (:mod:`evaluation.protocol`).

``tau_t = theta_t - theta_0`` per task; each method merges the task vectors once per search
point and is scored at every alpha without re-merging. The zoo (``conf/model``) and the
benchmark (``conf/benchmark``) are built with ``hydra.utils.instantiate``; the zoo supplies
the evaluator, so any family (CLIP image encoders, T5, ...) runs through this code.

Consensus with ``lam: from_tall_masks`` builds its masks at the lambda_t that the TALL-masks
protocol selected per task on val for the same base (Wang et al., ICML 2024, as in the
authors' code): from the run's own TALL-masks method with the same base options when it
has one, else from a TALL-masks selection on val run for it; its result rows record the
lambdas and where they came from. Its stored unit depends on the run's TALL-masks methods
except those that select what it would select on its own
(:func:`~experiments.pipelines.late_options.own_selection`).

Data-based methods (``needs`` holds ``"data"``: Fisher, RegMean, AdaMerging) get the zoo's
task data (:attr:`evaluation.zoo.Experts.task_data`) as their context: the train split, or
the test split's unlabelled inputs for test-time adaptation (``needs`` holds
``"test_inputs"``: AdaMerging), as many examples per task as the method's ``examples``
option asks at any search point (``None``: the whole split). Their rows add, per task, the
examples they consumed (metric ``examples_used``, split = the split they came from) and,
on the average, ``test_time_adaptation`` (1: it saw test inputs, 0: train data only).

This module is what a run needs to reuse stored rows (dependencies, the table) and imports
no torch; the computation lives in :mod:`experiments.pipelines.task_vector_run`, imported
when a run computes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
from omegaconf import DictConfig

from evaluation.results import AVERAGE
from experiments.pipelines.late_options import FROM_TALL_MASKS, own_selection

if TYPE_CHECKING:
    from evaluation.results import Row
    from experiments.context import RunContext


class TaskVectorPipeline:
    """The task-vector regime (:class:`experiments.pipelines.Pipeline`)."""

    def depends_on(self, unit: str, methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """A method with an option ``from_tall_masks`` (Consensus' ``lam``) uses the
        lambdas that the run's TALL-masks methods select on val: it depends on every one
        of them (a superset of the one it uses: the choice needs the merge registry) but
        those that select what it would select on its own (``late_options.own_selection``),
        which it uses only where no other one fits (``task_vector_run._tall_method_for``). So
        Consensus run alone and next to the default TALL masks is one stored unit with one
        configuration (the same lambdas); on several devices the two may then run in
        different processes, and Consensus' process makes the selection again."""
        own = methods[unit]
        hparams = own.get("hparams") or {}
        if FROM_TALL_MASKS not in hparams.values():
            return []
        return [
            k
            for k, m in methods.items()
            if m.get("fn") == "tall_masks" and k != unit and not own_selection(m, hparams)
        ]

    def validate(self, cfg: DictConfig) -> None:
        """Check zoo, benchmark, methods and options before any long computation."""
        from experiments.pipelines import task_vector_run

        task_vector_run.validate(cfg)

    def run(self, cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]:
        """Yield ``(method key, rows)`` as each method finishes."""
        from experiments.pipelines import task_vector_run

        return task_vector_run.run(cfg, ctx)

    def table(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The paper-style table: one row per method, one column per task (test accuracy),
        then the average absolute and average normalised accuracy."""
        test = frame[frame.split == "test"]
        methods = list(dict.fromkeys(test.method))
        tasks = [t for t in dict.fromkeys(test.task) if t != AVERAGE]
        acc = test[test.metric == "accuracy"].pivot_table(
            index="method", columns="task", values="value", aggfunc="first"
        )
        norm = test[(test.metric == "normalized_accuracy") & (test.task == AVERAGE)]
        out = acc.reindex(index=methods, columns=tasks)
        out["avg abs"] = acc.reindex(methods)[AVERAGE]
        out["avg norm"] = norm.set_index("method").reindex(methods)["value"]
        out.index.name = "method"
        return out
