"""TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from merging.options import TOPK_COUNTS, ZERO_SIGNS, choice, fraction, non_negative_int
from merging.registry import merge_method
from merging.selection import Values, topk_masks
from merging.streaming import Scratch, TaskVectors, blocks

Tensor = torch.Tensor
AGGREGATIONS = ("mean", "sum")
_MERGE_BLOCK = 1 << 22
"""Values (of all tasks together) per block of the disjoint merge: 16 MiB of float32, in
the CPU's last-level cache; per key, its six passes over the (tasks x block) values run
there instead of over (tasks x key) in memory. 1.5 ns per value, against 1.8 for blocks
of 1 MiB (the per-op dispatch weighs) and 2.1 for 64 MiB (20 tasks, one thread, here)."""


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

    def trimmed_blocks(key: str, taus: list[Tensor]) -> Iterator[tuple[slice, Tensor]]:
        """``(block, trimmed)``: the trimmed values of every task in one block of the key,
        a (T, block) scratch buffer of at most :data:`_MERGE_BLOCK` values. The block length
        is a power of two (at least 1024): torch's ``sum(0)`` groups columns in aligned
        chunks, so aligned blocks sum every column exactly as the whole key would."""
        flat = [
            (x if values is None else values(t, key, x)).to(torch.float32).reshape(-1)
            for t, x in enumerate(taus)
        ]
        tied = [s.kept_ties(key, x) for s, x in zip(selections, flat, strict=True)]
        length = 1 << max((_MERGE_BLOCK // len(taus)).bit_length() - 1, 10)
        for block in blocks(flat[0].numel(), length):
            size = block.stop - block.start
            trimmed = scratch("trimmed", len(taus) * size, torch.float32, flat[0].device)
            trimmed = trimmed.view(len(taus), size)
            for s, x, ties_kept, row in zip(selections, flat, tied, trimmed, strict=True):
                s.trim_block(x, block, ties_kept, row)
            yield block, trimmed

    fill = 0.0
    if zero_sign == "majority":
        balance = 0
        for key in tvs.float_keys:
            for _, trimmed in trimmed_blocks(key, tvs.tensors(key)):
                summed_signs = trimmed.sum(0)
                balance += int((summed_signs > 0).sum()) - int((summed_signs < 0).sum())
        fill = 1.0 if balance > 0 else -1.0

    def merge(key: str, taus: list[Tensor]) -> Tensor:
        out = torch.empty(taus[0].shape, dtype=torch.float32, device=taus[0].device)
        for block, trimmed in trimmed_blocks(key, taus):
            out.view(-1)[block] = disjoint_merge(trimmed, agg, fill)
        return out

    return merge


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
