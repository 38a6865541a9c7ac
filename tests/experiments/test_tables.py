"""Notes printed under a run's table (experiments.tables)."""

import json

import pandas as pd

from experiments.tables import edge_notes


def rows(method: str, val_points: list[dict], chosen: dict, task: str = "average") -> list[dict]:
    """Val rows at every point, then the test row of the average accuracy at ``chosen``
    (after a per-task test row at another point, which is not read)."""
    first = {**chosen, "alpha": 0.5} if "alpha" in chosen else chosen
    row = {"task": "a", "metric": "accuracy"}
    out = [{**row, "method": method, "split": "val", "hyperparameters": json.dumps(p)}
           for p in val_points]  # fmt: skip
    out.append({**row, "method": method, "split": "test", "hyperparameters": json.dumps(first)})
    return out + [{"method": method, "split": "test", "task": task, "metric": "accuracy",
                   "hyperparameters": json.dumps(chosen)}]  # fmt: skip


def test_a_selection_on_the_edge_of_a_grid_of_three_or_more_is_noted() -> None:
    grid = [{"alpha": a, "density": 0.2} for a in (0.1, 0.5, 1.0)]
    frame = pd.DataFrame(
        rows("TA", grid, {"alpha": 0.1, "density": 0.2})  # smallest: noted
        + rows("TIES", grid, {"alpha": 0.5, "density": 0.2})  # inside: not noted
        + rows("Top", grid, {"alpha": 1.0, "density": 0.2})  # largest: noted
        + rows("Two", [{"alpha": 0.5}, {"alpha": 1.0}], {"alpha": 1.0})  # two values: not noted
        + rows("TALL", [{"alpha": 1.0, "lam": x} for x in (0.2, 0.4, 0.6)],
               {"alpha": "per_task", "lam": "per_task"})  # per-task selection: not checked
        + rows("Zero-shot", [{"alpha": 1.0}], {"alpha": 1.0})
        # no average row (the different-init regime): not checked
        + rows("Base model", [{"model": m, "models": 1} for m in range(3)],
               {"model": 0, "models": 1}, task="parts10")
        # a searched option: each value checked against the points with the others as chosen
        + rows("DARE", [{"alpha": a, "p": p} for a in (0.1, 0.5, 1.0) for p in (0.1, 0.5, 0.9)],
               {"alpha": 0.5, "p": 0.9})
    )  # fmt: skip
    assert edge_notes(frame) == [
        "TA: val selected the smallest alpha of its grid (0.1 of 0.1..1); "
        "the val optimum may lie outside the grid",
        "Top: val selected the largest alpha of its grid (1 of 0.1..1); "
        "the val optimum may lie outside the grid",
        "DARE: val selected the largest p of its grid (0.9 of 0.1..0.9); "
        "the val optimum may lie outside the grid",
    ]
