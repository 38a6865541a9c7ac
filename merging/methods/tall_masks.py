"""TALL masks (Wang et al., "Localizing Task Information for Improved Model Merging and
Compression", ICML 2024)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from merging.masks import MaskedVector, masked_multitask
from merging.methods.ties import ties_merger
from merging.options import choice, fraction, per_task
from merging.registry import merge_method
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor
Merger = Callable[[str, list[Tensor]], Tensor]


def multitask_merger(tvs: TaskVectors, base: str, k: float, agg: str) -> Merger:
    """Per-key ``tau_MTL``: the sum of the task vectors (``base="ta"``) or the TIES vector
    with options ``k``, ``agg`` (``base="ties"``). Checks every option first."""
    base = choice("base", base, ("ta", "ties"))
    fraction("k", k)
    choice("agg", agg, ("mean", "sum"))
    if base == "ta":
        return lambda key, taus: summed(taus)
    return ties_merger(tvs, k, agg)


def tall_masks_rule(lams: Sequence[float]) -> Callable[[str, list[Tensor], Tensor], list[Tensor]]:
    """``m_t = 1{|tau_t| >= lam_t * |tau_MTL - tau_t|}`` for every task ``t``."""
    return lambda key, taus, mtl: [
        x.abs() >= lam * (mtl - x).abs() for lam, x in zip(lams, taus, strict=True)
    ]


def streamed_tall_masks(
    tvs: TaskVectors, lam: float | Sequence[float], base: str, k: float, agg: str
) -> Iterator[tuple[str, Tensor, list[Tensor]]]:
    """``(key, tau_MTL[key], [m_1[key], ..., m_T[key]])`` for each float key, in order."""
    lams = per_task("lam", lam, len(tvs))
    merged, rule = multitask_merger(tvs, base, k, agg), tall_masks_rule(lams)
    for key in tvs.float_keys:
        taus = tvs.tensors(key)
        mtl = merged(key, taus)
        yield key, mtl, rule(key, taus, mtl)


def tall_masks_of(
    task_vectors: Sequence[Mapping[str, Tensor]],
    lam: float | Sequence[float],
    base: str = "ta",
    *,
    device: str | torch.device | None = None,
    **base_options: float | str,
) -> list[dict[str, Tensor]]:
    """The TALL masks themselves: one dict of boolean tensors (float keys only) per task.

    ``base_options`` are TIES's ``k`` (default 0.2) and ``agg`` (default "sum") when
    ``base="ties"``.
    """
    unknown = sorted(set(base_options) - {"k", "agg"})
    if unknown:
        raise TypeError(f"tall_masks_of has no option {unknown[0]!r}; base options: k, agg")
    tvs = TaskVectors(task_vectors, device=device)
    if len(tvs) < 2:
        raise ValueError(f"TALL masks need at least 2 task vectors, got {len(tvs)}")
    opts = {"k": 0.2, "agg": "sum", **base_options}
    out: list[dict[str, Tensor]] = [{} for _ in range(len(tvs))]
    for key, _, masks in streamed_tall_masks(tvs, lam, base, opts["k"], opts["agg"]):
        for o, m in zip(out, masks, strict=True):
            o[key] = m.cpu()
    return out


@merge_method(
    "tall_masks",
    label="TALL mask + TA",
    reference="Wang et al., ICML 2024 (TALL masks); nik-dim/tall_masks",
    storage="masks",
    task_specific=True,
    min_inputs=2,
)
def tall_masks(
    tvs: TaskVectors,
    *,
    lam: float | Sequence[float] = 0.4,
    base: str = "ta",
    k: float = 0.2,
    agg: str = "sum",
) -> list[MaskedVector]:
    """TALL masks: ``tau_MTL`` is the sum of the task vectors (``base="ta"``) or the TIES
    vector (``base="ties"``, options ``k``, ``agg``; the authors' code uses ``k=0.2``,
    ``agg="sum"``, the defaults here); task ``t`` gets
    ``m_t * tau_MTL`` with ``m_t = 1{|tau_t| >= lam_t * |tau_MTL - tau_t|}`` (``lam`` one
    value or one per task; the paper picks each ``lam_t`` from {0.2, ..., 0.6} on task
    ``t``'s validation set).

    Returns one lazy task vector per task: ``tau_MTL`` is stored once and each mask at
    1 bit per weight (``.masks``, see :mod:`merging.masks`); a key is materialised when read.
    """
    lams = per_task("lam", lam, len(tvs))
    return masked_multitask(tvs, multitask_merger(tvs, base, k, agg), tall_masks_rule(lams))
