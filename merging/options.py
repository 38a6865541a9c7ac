"""Range checks for merge hyperparameters, with errors that name the option, and the named
options that select an authors' code behaviour where it differs from the paper.

Artefact options (issue 9; ``results/fidelity.md`` lists which presets use which). The
default is what the method's paper defines; the other value is what the authors' code does:

* ``topk_count`` (TIES, DARE + TIES, magnitude masking and pruning, TALL masks and
  Consensus over TIES): ``"exact"`` keeps ``ceil(density * N)`` entries of the ``N`` merged
  ones, ties at the threshold to the earliest; ``"authors"`` counts, as
  ``topk_values_mask`` of nik-dim/tall_masks and prateeky2806/ties-merging does,
  ``N + extra_entries`` entries (their flattened checkpoints hold ``extra_entries`` zeros
  the merge never uses, e.g. CLIP's text tower in an image-encoder checkpoint) and keeps
  every entry whose magnitude reaches the ``(int((N + extra) * density) + 1)``-th largest.
* ``zero_sign`` (TIES and what uses it): ``"zero"`` leaves a weight whose summed trimmed
  sign is exactly 0 at 0; ``"majority"`` gives it the majority sign of the whole vector
  (``resolve_zero_signs`` of the TIES authors).
* ``comparison`` (TALL masks, Consensus): ``"inclusive"``, ``|tau_t| >= lam |tau_MTL -
  tau_t|`` (the paper's Eq.); ``"strict"``, ``>`` (the authors' ``generate_task_masks``).
* ``rank_count`` (TSV-M): ``"at_least_one"`` keeps ``max(1, floor(r / T))`` triplets per
  task; ``"authors"`` keeps ``int(r * (1 / T))``, zero (a zero matrix) when ``r < T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

TOPK_COUNTS = ("exact", "authors")
ZERO_SIGNS = ("zero", "majority")
COMPARISONS = ("inclusive", "strict")
RANK_COUNTS = ("at_least_one", "authors")


def number(name: str, value: object) -> float:
    """``value`` as a float; ``ValueError`` naming the option if it is not a finite number
    (NaN would pass every range check: each comparison with it is false)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {name!r} must be a finite number, got {value!r}")
    return float(value)


def fraction(name: str, value: float) -> float:
    """A kept fraction in (0, 1]."""
    if not 0.0 < number(name, value) <= 1.0:
        raise ValueError(f"option {name!r} must be in (0, 1], got {value!r}")
    return float(value)


def probability(name: str, value: float) -> float:
    """A drop rate in [0, 1)."""
    if not 0.0 <= number(name, value) < 1.0:
        raise ValueError(f"option {name!r} must be in [0, 1), got {value!r}")
    return float(value)


def non_negative_int(name: str, value: int) -> int:
    """A non-negative integer (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"option {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


def positive_int(name: str, value: object) -> int:
    """A positive integer (``bool`` is refused)."""
    if non_negative_int(name, value) < 1:
        raise ValueError(f"option {name!r} must be a positive integer, got {value!r}")
    return int(value)


def non_negative(name: str, value: object) -> float:
    """A non-negative finite number (a weight decay)."""
    if not number(name, value) >= 0:
        raise ValueError(f"option {name!r} must be non-negative, got {value!r}")
    return float(value)


def positive(name: str, value: object) -> float:
    """A positive finite number (a learning rate)."""
    if not number(name, value) > 0:
        raise ValueError(f"option {name!r} must be positive, got {value!r}")
    return float(value)


def choice(name: str, value: str, valid: Sequence[str]) -> str:
    """``value`` if it is one of ``valid``."""
    if value not in valid:
        raise ValueError(
            f"option {name!r} must be one of {', '.join(map(repr, valid))}, got {value!r}"
        )
    return value


def per_task(name: str, value: float | Sequence[float], num_tasks: int) -> list[float]:
    """One non-negative float, or one per task, expanded to a list of ``num_tasks``."""
    if isinstance(value, str):
        raise ValueError(f"option {name!r} must be a number or one per task, got {value!r}")
    values = (
        [number(name, value)] * num_tasks
        if isinstance(value, int | float)
        else [number(name, v) for v in value]
    )
    if len(values) != num_tasks:
        raise ValueError(f"option {name!r} has {len(values)} values for {num_tasks} tasks")
    if any(v < 0 for v in values):
        raise ValueError(f"option {name!r} must be non-negative, got {value!r}")
    return values
