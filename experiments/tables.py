"""Rendering result tables for the console and Markdown files."""

from __future__ import annotations

import json
import math
from numbers import Real

import pandas as pd

from evaluation.results import AVERAGE


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(frame: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub Markdown table of ``frame`` (index as the first column)."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index), *(_cell(v, digits) for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def console(frame: pd.DataFrame, digits: int = 1) -> str:
    """A plain aligned table for the terminal."""
    return frame.to_string(float_format=lambda v: f"{v:.{digits}f}", na_rep="-")


def edge_notes(frame: pd.DataFrame) -> list[str]:
    """One line per (method, option) of long-format result rows whose value selected on val
    is the smallest or the largest of the three or more values that the method's val rows
    cover with its other options as selected: the val optimum may lie outside the grid, and
    a wider grid may change the method's row. The selected point is read from the method's
    test row of the average accuracy (the task-vector protocol's; rows without one, such as
    the different-initialisation regime's, give no note); options with a non-numeric value
    there (``"per_task"``: selected per task) are not checked."""
    notes = []
    for method, rows in frame.groupby("method", sort=False):
        average = rows[
            (rows.split == "test") & (rows.task == AVERAGE) & (rows.metric == "accuracy")
        ]
        chosen = json.loads(average.hyperparameters.iloc[0]) if len(average) else None
        if not isinstance(chosen, dict):
            continue
        points = [json.loads(h) for h in rows[rows.split == "val"].hyperparameters.unique()]
        for name, value in chosen.items():
            others = {k: v for k, v in chosen.items() if k != name}
            grid = sorted({
                p[name] for p in points
                if isinstance(p, dict) and _number(p.get(name))
                and all(p.get(k) == v for k, v in others.items())
            })  # fmt: skip
            if _number(value) and len(grid) >= 3 and value in (grid[0], grid[-1]):
                side = "smallest" if value == grid[0] else "largest"
                notes.append(
                    f"{method}: val selected the {side} {name} of its grid ({value:g} of "
                    f"{grid[0]:g}..{grid[-1]:g}); the val optimum may lie outside the grid"
                )
    return notes


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
