"""TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from merging.options import TOPK_COUNTS, ZERO_SIGNS, choice, fraction, non_negative_int
from merging.registry import merge_method
from merging.selection import Values, topk_masks
from merging.streaming import Scratch, TaskVectors

Tensor = torch.Tensor
AGGREGATIONS = ("mean", "sum")


def disjoint_merge(trimmed: Tensor, agg: str, zero_sign: float = 0.0) -> Tensor:
    """Elect ``s = sign(sum_t trimmed_t)`` and aggregate the entries that agree with it
    (``trimmed``, of shape (T, ...), is overwritten).

    ``agg="sum"``: ``sum_{t in A} trimmed_t``; ``agg="mean"``: that sum over ``|A|``, with
    ``A = {t : sign(trimmed_t) = s != 0}``. Where the sum is exactly 0, ``s = zero_sign``:
    0 (no task agrees, the weight is 0) or the sign the authors' code fills in (+-1).
    """
    sign = trimmed.sum(0).sign_()
    if zero_sign:
        sign[sign == 0] = zero_sign
    agreeing = trimmed.mul_(sign).clamp_(min=0)  # |trimmed_t| where t agrees, else 0 (in place)
    total = agreeing.sum(0).mul_(sign)
    return total if agg == "sum" else total.div_(agreeing.sign_().sum(0).clamp_(min=1))


def check_ties_options(
    density: float, agg: str, topk_count: str, extra_entries: int, zero_sign: str
) -> None:
    """Raise ``ValueError`` naming the first TIES option out of range."""
    fraction("density", density)
    choice("agg", agg, AGGREGATIONS)
    choice("topk_count", topk_count, TOPK_COUNTS)
    non_negative_int("extra_entries", extra_entries)
    choice("zero_sign", zero_sign, ZERO_SIGNS)


def ties_merger(
    tvs: TaskVectors,
    density: float,
    agg: str,
    values: Values | None = None,
    *,
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
) -> Callable[[str, list[Tensor]], Tensor]:
    """Per-key TIES merge after the global pre-passes: ``fn(key, taus)`` for
    :meth:`TaskVectors.map`.

    Pre-passes: the exact global top-k of every task (two reads, :mod:`merging.selection`,
    counted by ``topk_count``/``extra_entries``); with ``zero_sign="majority"`` a third read
    counts the elected signs of the whole vector, ``balance = #{s = +1} - #{s = -1}``, and a
    zero-sum weight takes ``sign(balance)``, or -1 if ``balance = 0`` (the authors'
    ``resolve_zero_signs`` leaves it 0 there, which their ``disjoint_merge`` reads as
    negative). ``values(t, key, tau)`` transforms each task's tensor first (DARE), the same
    way for the selection and the merge.
    """
    check_ties_options(density, agg, topk_count, extra_entries, zero_sign)
    selections = topk_masks(tvs, density, values, count=topk_count, extra_entries=extra_entries)

    scratch = Scratch()

    def trim(key: str, taus: list[Tensor]) -> Tensor:
        n = len(taus) * taus[0].numel()
        trimmed = scratch("trimmed", n, torch.float32, taus[0].device).view(
            len(taus), *taus[0].shape
        )
        for t, (s, x) in enumerate(zip(selections, taus, strict=True)):
            s.trim(key, x if values is None else values(t, key, x), trimmed[t])
        return trimmed

    fill = 0.0
    if zero_sign == "majority":
        balance = 0
        for key in tvs.float_keys:
            summed_signs = trim(key, tvs.tensors(key)).sum(0)
            balance += int((summed_signs > 0).sum()) - int((summed_signs < 0).sum())
        fill = 1.0 if balance > 0 else -1.0

    return lambda key, taus: disjoint_merge(trim(key, taus), agg, fill)


@merge_method(
    "ties",
    label="TIES",
    reference="Yadav et al., NeurIPS 2023; prateeky2806/ties-merging",
    storage="merged",
)
def ties(
    tvs: TaskVectors,
    *,
    density: float = 0.2,
    agg: str = "mean",
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
) -> dict[str, Tensor]:
    """TIES: trim each ``tau_t`` to its top-``density`` fraction by magnitude, globally over
    all of its parameters (exact, see :mod:`merging.selection`); elect the sign of every
    weight by the summed trimmed values (the sign of greatest total mass); take the disjoint
    mean (or sum, ``agg="sum"``) of the trimmed values that agree with it. Returns the
    unscaled merged task vector.

    The paper's definitions are the defaults; ``topk_count="authors"`` (with
    ``extra_entries``) and ``zero_sign="majority"`` reproduce the authors' code
    (:mod:`merging.options`, :func:`ties_merger`). Raises ``ValueError`` naming the option.
    """
    merger = ties_merger(
        tvs, density, agg, topk_count=topk_count, extra_entries=extra_entries, zero_sign=zero_sign
    )
    return tvs.map(merger)
