"""Rendering result tables for the console and Markdown files."""

from __future__ import annotations

import math

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
