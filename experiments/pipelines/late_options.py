"""Option values that a method config may leave to the task-vector pipeline, which decides
them during the run (:mod:`experiments.pipelines.task_vector_run`), and the stand-ins with
which their methods' options are checked before any long computation."""

FROM_TALL_MASKS = "from_tall_masks"  # Consensus' lam: the lambdas TALL masks chose on val
TALL_GRID = [0.2, 0.3, 0.4, 0.5, 0.6]  # the paper's lambda grid, of Consensus' own TALL selection
FROM_ZOO = "from_zoo"  # extra_entries: the zoo's count of unmerged checkpoint entries
LATE_OPTIONS = {"lam": (FROM_TALL_MASKS, 0.4), "extra_entries": (FROM_ZOO, 0)}  # stand-ins
