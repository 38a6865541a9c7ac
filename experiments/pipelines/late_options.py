"""Option values that a method config may leave to the task-vector pipeline, which decides
them during the run (:mod:`experiments.pipelines.task_vector_run`), the stand-ins with
which their methods' options are checked before any long computation, and which TALL
selection gives Consensus' ``from_tall_masks`` lambdas (no torch: a run of stored units
needs it for its units' keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FROM_TALL_MASKS = "from_tall_masks"  # Consensus' lam: the lambdas TALL masks chose on val
TALL_GRID = [0.2, 0.3, 0.4, 0.5, 0.6]  # the paper's lambda grid, of Consensus' own TALL selection
FROM_ZOO = "from_zoo"  # extra_entries: the zoo's count of unmerged checkpoint entries
LATE_OPTIONS = {"lam": (FROM_TALL_MASKS, 0.4), "extra_entries": (FROM_ZOO, 0)}  # stand-ins


def own_selection(tall: Mapping[str, Any], consensus: Mapping[str, Any]) -> bool:
    """Whether the TALL-masks method config ``tall`` (``hparams``, ``search``, ``select``,
    ``alphas``) selects the lambdas that Consensus, with options ``consensus``, selects on
    its own when its run has no such method: base "ta" on both, the same ``comparison``,
    each task's lambda from :data:`TALL_GRID` on its own val split, alpha 1. Options are
    compared as written (filling in the defaults needs the merge registry), so a config
    that writes out a default counts as another selection."""
    options = dict(tall.get("hparams") or {})
    return (
        options.get("base", "ta") == "ta" == consensus.get("base", "ta")
        and set(options) <= {"base", "comparison"}
        and options.get("comparison") == consensus.get("comparison")
        and {k: list(v) for k, v in (tall.get("search") or {}).items()} == {"lam": TALL_GRID}
        and tall.get("select") == "per_task"
        and list(tall.get("alphas") or [1.0]) == [1.0]
    )
