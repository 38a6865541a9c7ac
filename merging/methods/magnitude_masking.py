"""Magnitude masking: the baseline of Wang et al., "Localizing Task Information for Improved
Model Merging and Compression", ICML 2024 (TALL masks with top-k masks)."""

from __future__ import annotations

from merging.masks import MaskedVector, masked_multitask
from merging.registry import merge_method
from merging.selection import topk_masks
from merging.streaming import TaskVectors, summed


@merge_method(
    "magnitude_masking",
    label="Magnitude masking",
    reference="Wang et al., ICML 2024 (baseline); nik-dim/tall_masks",
    storage="masks",
    task_specific=True,
)
def magnitude_masking(
    tvs: TaskVectors,
    *,
    density: float = 0.1,
    topk_count: str = "exact",
    extra_entries: int = 0,
) -> list[MaskedVector]:
    """Task ``t`` gets ``m_t * tau_MTL`` with ``tau_MTL = sum_t tau_t`` and ``m_t`` the mask
    of the top-``density`` fraction of ``|tau_t|``, globally over all of its parameters
    (exact, :mod:`merging.selection`; ``topk_count="authors"`` with ``extra_entries``
    counts as the authors' code, :mod:`merging.options`). The authors' code keeps 10%.

    Returns one lazy task vector per task: ``tau_MTL`` is stored once and each mask at
    1 bit per weight (``.masks``); a key is materialised when read.
    """
    selections = topk_masks(tvs, density, count=topk_count, extra_entries=extra_entries)
    return masked_multitask(
        tvs,
        lambda key, taus: summed(taus),
        lambda key, taus, mtl: [s.mask(key, x) for s, x in zip(selections, taus, strict=True)],
    )
