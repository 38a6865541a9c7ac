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
* ``not_accounted``: no rule (NaN in tables).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

FLOAT_BITS = 32


@dataclass(frozen=True)
class StorageRule:
    """``bits(num_tasks, n_params_model, n_params_merged)`` and whether the paper reports
    it as a lower bound."""

    bits: Callable[[int, int, int], float]
    lower_bound: bool = False


def _masks(t: int, n: int, m: int) -> float:
    return float(FLOAT_BITS * n + FLOAT_BITS * m + t * m)


STORAGE_RULES: dict[str, StorageRule] = {
    "merged": StorageRule(lambda t, n, m: float(FLOAT_BITS * n)),
    "experts": StorageRule(lambda t, n, m: float(FLOAT_BITS * (n - m) + FLOAT_BITS * t * m)),
    "masks": StorageRule(_masks),
    "masks_lower_bound": StorageRule(_masks, lower_bound=True),
    "masks_rescalers": StorageRule(lambda t, n, m: _masks(t, n, m) + FLOAT_BITS * t),
    "not_accounted": StorageRule(lambda t, n, m: math.nan),
}


def storage_bits(rule: str, num_tasks: int, n_params_model: int, n_params_merged: int) -> float:
    """Bits of storage rule ``rule`` (module docstring) for ``num_tasks`` tasks; raises
    ``ValueError`` unless ``num_tasks >= 1`` and ``1 <= n_params_merged <= n_params_model``."""
    if num_tasks < 1 or n_params_merged < 1 or n_params_model < n_params_merged:
        raise ValueError(
            f"storage rule {rule!r}: need num_tasks >= 1 and 1 <= n_params_merged <= "
            f"n_params_model, got {num_tasks}, {n_params_merged}, {n_params_model}"
        )
    return STORAGE_RULES[rule].bits(num_tasks, n_params_model, n_params_merged)
