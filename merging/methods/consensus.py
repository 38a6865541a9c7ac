"""Consensus Merging (Wang et al., "Localizing Task Information for Improved Model Merging
and Compression", ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from merging.methods.tall_masks import streamed_tall_masks
from merging.options import fraction, per_task
from merging.registry import merge_method
from merging.streaming import TaskVectors

Tensor = torch.Tensor


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
    ties_k: float = 0.2,
    agg: str = "sum",
) -> dict[str, Tensor]:
    """Consensus merging: keep the weights that at least ``k`` TALL masks select,
    ``tau = 1{sum_t m_t >= k} * tau_MTL``, unscaled (the caller applies alpha).

    ``m_t`` and ``tau_MTL`` are those of :func:`~merging.methods.tall_masks.tall_masks`
    (``base`` "ta": the sum of the task vectors; "ties": the TIES vector with options
    ``ties_k`` and ``agg``, default 0.2 and "sum" as in the authors' code). ``k=2`` removes
    catastrophic (no mask) and selfish (one mask) weights, ``k=0`` gives ``tau_MTL``.
    The authors' code builds ``m_t`` with each task's validation-selected ``lam_t`` from
    {0.2, ..., 0.6} (it reuses the stored TALL masks); without data, the default here is
    the middle of that grid, 0.4; pass the selected values per task where known.
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
        raise ValueError(f"option 'k' must be a non-negative integer, got {k!r}")
    per_task("lam", lam, len(tvs))
    fraction("ties_k", ties_k)
    out: dict[str, Tensor] = {}
    for key, mtl, masks in streamed_tall_masks(tvs, lam, base, ties_k, agg):
        votes = torch.zeros(mtl.shape, dtype=torch.int16, device=mtl.device)
        for m in masks:
            votes += m
        out[key] = tvs.finish(key, torch.where(votes >= k, mtl, 0))
    return {key: out[key] if tvs.is_float(key) else tvs.raw(0, key) for key in tvs.keys}
