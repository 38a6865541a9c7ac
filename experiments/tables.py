"""Rendering result tables for the console and Markdown files."""

from __future__ import annotations

import json
import math
from numbers import Real

import pandas as pd


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
    """One line per (method, hyperparameter) of long-format result rows whose value selected
    on val (read from the method's first test row) is the smallest or the largest of the
    three or more values its val rows cover: the val optimum may lie outside the grid, and
    a wider grid may change the method's row. Non-numeric values (``"per_task"``) are not
    checked."""
    notes = []
    for method, rows in frame.groupby("method", sort=False):
        test = rows[rows.split == "test"]
        if test.empty:
            continue
        chosen = json.loads(test.hyperparameters.iloc[0])
        points = [json.loads(h) for h in rows[rows.split == "val"].hyperparameters.unique()]
        for name, value in chosen.items():
            if not _number(value):
                continue
            grid = sorted({p[name] for p in points if _number(p.get(name))})
            if len(grid) >= 3 and value in (grid[0], grid[-1]):
                side = "smallest" if value == grid[0] else "largest"
                notes.append(
                    f"{method}: val selected the {side} {name} of its grid ({value:g} of "
                    f"{grid[0]:g}..{grid[-1]:g}); the val optimum may lie outside the grid"
                )
    return notes


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
