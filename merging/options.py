"""Range checks for merge hyperparameters, with errors that name the option."""

from __future__ import annotations

from collections.abc import Sequence


def fraction(name: str, value: float) -> float:
    """A kept fraction in (0, 1]."""
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"option {name!r} must be in (0, 1], got {value!r}")
    return float(value)


def probability(name: str, value: float) -> float:
    """A drop rate in [0, 1)."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"option {name!r} must be in [0, 1), got {value!r}")
    return float(value)


def choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ValueError(
            f"option {name!r} must be one of {', '.join(map(repr, valid))}, got {value!r}"
        )
    return value


def per_task(name: str, value: float | Sequence[float], num_tasks: int) -> list[float]:
    """One non-negative float, or one per task, expanded to a list of ``num_tasks``."""
    values = (
        [float(value)] * num_tasks if isinstance(value, int | float) else [float(v) for v in value]
    )
    if len(values) != num_tasks:
        raise ValueError(f"option {name!r} has {len(values)} values for {num_tasks} tasks")
    if any(v < 0 for v in values):
        raise ValueError(f"option {name!r} must be non-negative, got {value!r}")
    return values
