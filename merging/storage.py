"""Storage rules: bits to store what a method serves T tasks with, as accounted in the TALL
masks paper's tables (Wang et al., ICML 2024, Tables 1-2: Gbit = 1e9 bits, 32-bit floats,
1-bit masks). Each method names its rule on registration (``@merge_method(storage=...)``).

With ``N`` the parameters of the stored model and ``N_m`` those of the part that is
fine-tuned and merged (CLIP: the image encoder; T5: the whole model):

* ``merged``: one model, ``32 N``;
* ``experts``: the T fine-tuned experts sharing the untouched rest, ``32 (N - N_m) + 32 T N_m``;
* ``masks``: theta_0, the multi-task vector and T binary masks, ``32 N + 32 N_m + T N_m``
  (TALL masks, magnitude masking);
* ``masks_lower_bound``: the same, published as a lower bound (">"; magnitude pruning
  stores kept values and positions, which cost more than one mask);
* ``masks_rescalers``: the masks' cost plus T 32-bit rescalers (EMR-Merging, Huang et al.,
  NeurIPS 2024);
* ``low_rank``: theta_0 and, per task, a rank-``k`` SVD of each of its matrices plus its
  other merged entries in full (TSV-C, Gargiulo et al., CVPR 2025, storing ``U``, ``S``,
  ``V`` as the authors' ``compress_tv`` does),
  ``32 N + 32 T (sum_{m x n matrices} k (m + n + 1) + N_other)`` with
  ``k = max(1, floor(min(m, n) / T))``. It needs the merged part's shapes, not only its
  count: :func:`storage_bits` gives NaN without ``shapes``;
* ``not_accounted``: no rule (NaN in tables).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

FLOAT_BITS = 32


@dataclass(frozen=True)
class StorageRule:
    """``bits(num_tasks, n_params_model, n_params_merged)`` and whether the paper reports
    it as a lower bound; a rule that depends on the merged entries' shapes has
    ``shaped(num_tasks, n_params_model, shapes)`` instead (its ``bits`` is NaN)."""

    bits: Callable[[int, int, int], float]
    lower_bound: bool = False
    shaped: Callable[[int, int, Mapping[str, Sequence[int]]], float] | None = None


def _masks(t: int, n: int, m: int) -> float:
    return float(FLOAT_BITS * n + FLOAT_BITS * m + t * m)


def _low_rank(t: int, n: int, shapes: Mapping[str, Sequence[int]]) -> float:
    per_task = 0
    for shape in shapes.values():
        if len(shape) == 2:
            per_task += max(1, min(shape) // t) * (shape[0] + shape[1] + 1)
        else:
            per_task += math.prod(shape)
    return float(FLOAT_BITS * n + FLOAT_BITS * t * per_task)


STORAGE_RULES: dict[str, StorageRule] = {
    "merged": StorageRule(lambda t, n, m: float(FLOAT_BITS * n)),
    "experts": StorageRule(lambda t, n, m: float(FLOAT_BITS * (n - m) + FLOAT_BITS * t * m)),
    "masks": StorageRule(_masks),
    "masks_lower_bound": StorageRule(_masks, lower_bound=True),
    "masks_rescalers": StorageRule(lambda t, n, m: _masks(t, n, m) + FLOAT_BITS * t),
    "low_rank": StorageRule(lambda t, n, m: math.nan, shaped=_low_rank),
    "not_accounted": StorageRule(lambda t, n, m: math.nan),
}


def storage_bits(
    rule: str,
    num_tasks: int,
    n_params_model: int,
    n_params_merged: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> float:
    """Bits of storage rule ``rule`` (module docstring) for ``num_tasks`` tasks; ``shapes``
    (merged entry -> shape, ``sum(numel) = n_params_merged``) for the rules that need them
    (NaN without). Raises ``ValueError`` unless ``num_tasks >= 1`` and
    ``1 <= n_params_merged <= n_params_model``, or if ``shapes`` do not hold
    ``n_params_merged`` entries."""
    if num_tasks < 1 or n_params_merged < 1 or n_params_model < n_params_merged:
        raise ValueError(
            f"storage rule {rule!r}: need num_tasks >= 1 and 1 <= n_params_merged <= "
            f"n_params_model, got {num_tasks}, {n_params_merged}, {n_params_model}"
        )
    spec = STORAGE_RULES[rule]
    if spec.shaped is None:
        return spec.bits(num_tasks, n_params_model, n_params_merged)
    if shapes is None:
        return math.nan
    counted = sum(math.prod(shape) for shape in shapes.values())
    if counted != n_params_merged:
        raise ValueError(
            f"storage rule {rule!r}: the shapes hold {counted} entries, "
            f"n_params_merged is {n_params_merged}"
        )
    return spec.shaped(num_tasks, n_params_model, shapes)
