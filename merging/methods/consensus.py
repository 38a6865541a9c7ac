"""Consensus Merging (Wang et al., "Localizing Task Information for Improved Model Merging
and Compression", ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from merging.methods.tall_masks import streamed_tall_masks
from merging.options import fraction, per_task
from merging.registry import merge_method
from merging.streaming import TaskVectors, compare, masked

Tensor = torch.Tensor
TALL_MASKS_OPTIONS = {
    "base": "base",
    "comparison": "comparison",
    "ties_density": "density",
    "agg": "agg",
    "topk_count": "topk_count",
    "extra_entries": "extra_entries",
    "zero_sign": "zero_sign",
}
"""Consensus' options that build its TALL masks -> the same option of ``tall_masks``: a
TALL-masks run whose per-task lambdas Consensus reuses must share their values (the TIES
ones matter only with ``base="ties"``)."""


@merge_method(
    "consensus",
    label="Consensus TA",
    reference="Wang et al., ICML 2024 (Consensus Merging); nik-dim/tall_masks",
    storage="merged",
    min_inputs=2,
)
def consensus(
    tvs: TaskVectors,
    *,
    k: int = 2,
    lam: float | Sequence[float] = 0.4,
    base: str = "ta",
    ties_density: float = 0.2,
    agg: str = "sum",
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
    comparison: str = "inclusive",
) -> dict[str, Tensor]:
    """Consensus merging: keep the weights that at least ``k`` TALL masks select,
    ``tau = 1{sum_t m_t >= k} * tau_MTL``, unscaled (the caller applies alpha).

    ``m_t`` and ``tau_MTL`` are those of :func:`~merging.methods.tall_masks.tall_masks`
    with the same options (``base`` "ta": the sum of the task vectors; "ties": the TIES
    vector with ``ties_density``, ``agg``, ``topk_count``, ``extra_entries``,
    ``zero_sign``, default 0.2 and "sum" as in the authors' code; ``comparison`` of the
    masks). ``k=2`` removes catastrophic (no mask) and selfish (one mask) weights, ``k=0``
    gives ``tau_MTL``.

    ``lam``: one value or one per task. The authors build the consensus from the TALL masks
    their TALL run saved, each task's at its own validation-selected ``lam_t`` from
    {0.2, ..., 0.6}: pass those (the task-vector pipeline does, for ``lam: from_tall_masks``).
    A single value (default 0.4, the middle of that grid) is a stand-in without that run.
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or not 0 <= k <= len(tvs):
        raise ValueError(
            f"option 'k' must be an integer from 0 to the number of tasks ({len(tvs)}), "
            f"got {k!r}: above it no weight is kept (the zero-shot model)"
        )
    per_task("lam", lam, len(tvs))
    fraction("ties_density", ties_density)
    votes_of = streamed_tall_masks(
        tvs, lam, base, comparison, votes=True,
        density=ties_density, agg=agg, topk_count=topk_count, extra_entries=extra_entries,
        zero_sign=zero_sign,
    )  # fmt: skip
    out: dict[str, Tensor] = {}
    for key, mtl, votes in votes_of:
        keep = compare(votes, k, strict=False, out=torch.empty_like(votes, dtype=torch.bool))
        # mtl * 1{votes >= k} (a dropped negative entry becomes -0.0, equal to 0)
        out[key] = tvs.finish(key, masked(mtl, keep))
    return {key: out[key] if tvs.is_float(key) else tvs.raw(0, key) for key in tvs.keys}
