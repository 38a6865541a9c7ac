"""Notes printed under a run's table (experiments.tables)."""

import json

import pandas as pd

from experiments.tables import edge_notes


def rows(method: str, val_points: list[dict], chosen: dict) -> list[dict]:
    out = [
        {"method": method, "split": "val", "task": "a", "hyperparameters": json.dumps(p)}
        for p in val_points
    ]
    return out + [
        {"method": method, "split": "test", "task": "a", "hyperparameters": json.dumps(chosen)}
    ]


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
    )  # fmt: skip
    assert edge_notes(frame) == [
        "TA: val selected the smallest alpha of its grid (0.1 of 0.1..1); "
        "the val optimum may lie outside the grid",
        "Top: val selected the largest alpha of its grid (1 of 0.1..1); "
        "the val optimum may lie outside the grid",
    ]
