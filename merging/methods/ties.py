"""TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from merging.options import choice
from merging.registry import merge_method
from merging.selection import Values, topk_masks
from merging.streaming import TaskVectors

Tensor = torch.Tensor


def disjoint_merge(trimmed: Tensor, agg: str) -> Tensor:
    """Elect ``s = sign(sum_t trimmed_t)`` and aggregate the entries that agree with it
    (``trimmed``, of shape (T, ...), is overwritten).

    ``agg="sum"``: ``sum_{t in A} trimmed_t``; ``agg="mean"``: that sum over ``|A|``, with
    ``A = {t : sign(trimmed_t) = s != 0}``. Entries where no task agrees are 0 (this includes
    exact-zero sums, which the reference code instead fills with the global majority sign).
    """
    sign = trimmed.sum(0).sign_()
    agreeing = trimmed.mul_(sign).clamp_(min=0)  # |trimmed_t| where t agrees, else 0 (in place)
    total = agreeing.sum(0).mul_(sign)
    return total if agg == "sum" else total.div_(agreeing.sign_().sum(0).clamp_(min=1))


def ties_merger(
    tvs: TaskVectors, k: float, agg: str, values: Values | None = None
) -> Callable[[str, list[Tensor]], Tensor]:
    """Per-key TIES merge after the global pre-pass: ``fn(key, taus)`` for :meth:`TaskVectors.map`.

    ``values(t, key, tau)`` transforms each task's tensor first (DARE), the same way for
    the top-k selection and the merge.
    """
    agg = choice("agg", agg, ("mean", "sum"))
    selections = topk_masks(tvs, k, values)

    def merge_key(key: str, taus: list[Tensor]) -> Tensor:
        trimmed = torch.empty(len(taus), *taus[0].shape, device=taus[0].device)
        for t, (s, x) in enumerate(zip(selections, taus, strict=True)):
            v = x if values is None else values(t, key, x)
            torch.mul(v, s.mask(key, v), out=trimmed[t])
        return disjoint_merge(trimmed, agg)

    return merge_key


@merge_method(
    "ties",
    label="TIES",
    reference="Yadav et al., NeurIPS 2023; prateeky2806/ties-merging",
    storage="merged",
)
def ties(tvs: TaskVectors, *, k: float = 0.2, agg: str = "mean") -> dict[str, Tensor]:
    """TIES: trim each ``tau_t`` to its top-``k`` fraction by magnitude, globally over all of
    its parameters (exact, see :mod:`merging.selection`); elect the sign of every weight by
    the summed trimmed values (the sign of greatest total mass); take the disjoint mean (or
    sum, ``agg="sum"``) of the trimmed values that agree with it. Returns the unscaled
    merged task vector."""
    return tvs.map(ties_merger(tvs, k, agg))
