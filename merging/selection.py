"""Exact global top-k of each task vector by magnitude, streamed key by key.

For task ``t`` and kept fraction ``density``, :func:`topk_masks` selects exactly
``n = ceil(density * N)`` entries of largest ``|tau_t|`` among all ``N`` float parameters
of that task (a product ``density * N`` within 1e-9, relative, of an integer counts as that
integer, so ``0.2`` of 10 entries keeps 2, not 3 from float noise). Nothing is
concatenated: the threshold is a radix select on the float32 bit patterns of ``|x|`` (as
int32 they are ordered like the magnitudes), with two 16-bit histogram passes over the
keys. Entries equal to the threshold are kept in (key order, flat index within the key)
order, earliest first, through a per-key tie quota, so masking a key is stateless and the
same inputs always give the same selection.

``count="authors"`` counts as ``topk_values_mask`` of the TALL-masks and TIES authors
(nik-dim/tall_masks, prateeky2806/ties-merging) does on its flattened checkpoint of
``N + extra_entries`` entries, the extra ones zeros: the threshold is the
``m``-th largest magnitude, ``m = int((N + extra_entries) * density) + 1`` (a truncated
float product, plus one from their ``kthvalue(d - int(d K))`` and ``>=``), and every entry
that reaches it is kept, ties included; ``m > N`` (the threshold is one of the extra zeros)
keeps everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from merging.options import TOPK_COUNTS, choice, fraction, non_negative_int
from merging.streaming import Scratch, TaskVectors

Tensor = torch.Tensor
Values = Callable[[int, str, Tensor], Tensor]
"""``values(t, key, tau_t[key])``: the tensor whose magnitudes are ranked (e.g. after DARE)."""

_HI_BINS = 1 << 15  # high 16 bits of a non-negative float32 (the sign bit is 0)
_LO_BINS = 1 << 16  # low 16 bits


def kept_count(density: float, n: int) -> int:
    """``ceil(density * n)``, where a product within 1e-9 (relative) of an integer is that
    integer."""
    x = density * n
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, x) else math.ceil(x)


def authors_kept_count(density: float, n: int, extra_entries: int = 0) -> int:
    """``int((n + extra_entries) * density) + 1``: how many of the largest magnitudes the
    authors' ``topk_values_mask`` keeps at least (every tie with the last one as well)."""
    return int((n + extra_entries) * density) + 1


def magnitude_bits(x: Tensor) -> Tensor:
    """The float32 bit patterns of ``|x|`` as int32, which sort like ``|x|``."""
    return x.to(torch.float32).abs().view(torch.int32)


@dataclass(frozen=True)
class TopK:
    """One task's global top-n: an entry is kept iff its magnitude bits exceed
    ``threshold``, or equal it and are among the first ``quotas[key]`` such entries of
    ``key`` in flat order. ``kept`` of ``total`` entries are kept."""

    threshold: int
    quotas: dict[str, int]
    ties: dict[str, int]
    kept: int
    total: int

    def mask(self, key: str, values: Tensor) -> Tensor:
        """Boolean mask of the kept entries of ``values`` (this task's ranked tensor at ``key``)."""
        bits = magnitude_bits(values)
        keep = bits > self.threshold
        quota = self.quotas.get(key, 0)
        if quota:
            keep.view(-1)[self._kept_ties(key, bits)] = True
        return keep

    def trim(self, key: str, values: Tensor, out: Tensor) -> Tensor:
        """``values * mask(key, values)`` (float32) written into ``out``, dropped entries
        +0.0: one ``hardshrink`` pass at the threshold (it keeps ``|x| > threshold``, the
        same comparison as the bits), then the key's quota of tied entries."""
        values = values.to(torch.float32)
        if self.threshold < 0:
            return out.copy_(values)
        torch.ops.aten.hardshrink.out(values, _bits_value(self.threshold), out=out)
        if self.quotas.get(key, 0):
            tied = self._kept_ties(key, magnitude_bits(values))
            out.view(-1)[tied] = values.reshape(-1)[tied]
        return out

    def _kept_ties(self, key: str, bits: Tensor) -> Tensor:
        """Flat indices of the entries of ``key`` equal to the threshold that are kept: the
        first ``quotas[key]`` of them."""
        return (bits.reshape(-1) == self.threshold).nonzero()[: self.quotas[key], 0]


def _top_bin(hist: Tensor, n: int) -> tuple[int, int]:
    """The bin holding the ``n``-th largest entry, and how many of the top ``n`` lie in it."""
    below = np.cumsum(hist.cpu().numpy())  # below[b]: entries in bins <= b
    b = int(np.searchsorted(below, below[-1] - n, side="right"))
    return b, n - int(below[-1] - below[b])


def topk_masks(
    tvs: TaskVectors,
    density: float,
    values: Values | None = None,
    *,
    count: str = "exact",
    extra_entries: int = 0,
) -> list[TopK]:
    """Each task's global top-``density`` fraction by magnitude (see the module docstring;
    ``count`` "exact" or "authors", ``extra_entries`` counted by "authors" only).

    Reads every task vector twice, key by key (one tensor at a time; the first pass
    checks shapes, dtypes and finiteness); ``values``, if given, transforms each tensor
    before ranking and must be deterministic. Raises ``ValueError`` naming the option.
    """
    density = fraction("density", density)
    count = choice("topk_count", count, TOPK_COUNTS)
    extra = non_negative_int("extra_entries", extra_entries)
    num_tasks, keys = len(tvs), tvs.float_keys
    scratch = Scratch()

    def bits(t: int, key: str, checked: bool) -> Tensor:
        """``magnitude_bits`` of the ranked tensor, flat, in a buffer reused by the next call."""
        x = tvs.task(t, key) if checked else tvs.raw(t, key).to(tvs.device, torch.float32)
        v = (x if values is None else values(t, key, x)).to(torch.float32).flatten()
        return torch.abs(v, out=scratch("abs", v.numel(), v.dtype, v.device)).view(torch.int32)

    hi = torch.zeros(num_tasks, _HI_BINS, dtype=torch.int64, device=tvs.device)
    total = 0
    for key in keys:  # key by key: bad input is found at its first key, in every task
        for t in range(num_tasks):
            b = bits(t, key, checked=True)
            high = torch.bitwise_right_shift(
                b, 16, out=scratch("int", b.numel(), b.dtype, b.device)
            )
            hi[t] += torch.bincount(high, minlength=_HI_BINS)
        total += b.numel()
    exact = count == "exact"
    n = kept_count(density, total) if exact else authors_kept_count(density, total, extra)
    if n >= total:  # keep everything (also when there is nothing to keep)
        return [TopK(-1, {}, {}, total, total) for _ in range(num_tasks)]
    return [_resolve(t, hi[t], n, total, bits, keys, exact, scratch) for t in range(num_tasks)]


def _resolve(
    t: int,
    hi: Tensor,
    n: int,
    total: int,
    bits: Callable[..., Tensor],
    keys: list[str],
    earliest_ties: bool,
    scratch: Scratch,
) -> TopK:
    """Second pass over task ``t``: the low 16 bits of the threshold (the ``n``-th largest)
    and the tie quotas: the earliest ties up to ``n`` entries, or every tie.

    Task by task, so the small per-key candidate counts are freed before the next task
    (interleaved with the large temporaries of many tasks they fragment the heap); the
    key-sized temporaries are ``scratch`` buffers shared with the first pass.
    """
    top_bin, in_bin = _top_bin(hi, n)
    lo = torch.zeros(_LO_BINS, dtype=torch.int64, device=hi.device)
    candidates: dict[str, tuple[Tensor, Tensor]] = {}
    for key in keys:
        b = bits(t, key, checked=False)
        high = torch.bitwise_right_shift(b, 16, out=scratch("int", b.numel(), b.dtype, b.device))
        in_top = torch.eq(high, top_bin, out=scratch("bool", b.numel(), torch.bool, b.device))
        low = b[in_top] & 0xFFFF
        if low.numel():
            u, c = torch.unique(low, return_counts=True)
            lo.index_add_(0, u.long(), c)
            candidates[key] = (u, c)
    low_bin, tied_needed = _top_bin(lo, in_bin)
    quotas, ties = {}, {}
    above = n - tied_needed
    for key, (u, c) in candidates.items():
        ties[key] = int(c[u == low_bin].sum())
        quotas[key] = min(ties[key], tied_needed) if earliest_ties else ties[key]
        tied_needed -= quotas[key]
    return TopK((top_bin << 16) | low_bin, quotas, ties, above + sum(quotas.values()), total)


def kth_largest(
    keys: Sequence[str],
    ranked: Callable[[str], Sequence[Tensor]],
    counts: Sequence[Sequence[int]],
) -> list[list[float]]:
    """``out[t][q]``: the ``counts[t][q]``-th largest of task ``t``'s non-negative values
    ``ranked(key)[t]`` over all ``keys``, every entry counted (the value at that position
    of a descending sort of the concatenation; quantiles such as PCB's clamps).

    The same radix select as :func:`topk_masks` (16-bit histograms of the float32 bit
    patterns), but over values that ``ranked(key)`` computes from every task at once, so a
    ranking may depend on all tasks at a key. Two streamed reads of ``ranked``, which must
    be deterministic. Raises ``ValueError`` unless ``1 <= counts[t][q] <=`` the number of
    entries.
    """
    num_tasks = len(counts)
    hi: Tensor | None = None
    total = 0
    for key in keys:
        values = ranked(key)
        if hi is None:
            hi = torch.zeros(num_tasks, _HI_BINS, dtype=torch.int64, device=values[0].device)
        for t, x in enumerate(values):
            hi[t] += torch.bincount(magnitude_bits(x).flatten() >> 16, minlength=_HI_BINS)
        total += values[0].numel()
    for t, task_counts in enumerate(counts):
        for n in task_counts:
            if not 1 <= n <= total:
                raise ValueError(f"task {t}: cannot take the {n}-th largest of {total} entries")
    if hi is None:
        return [[] for _ in counts]
    tops = [[_top_bin(hi[t], n) for n in task_counts] for t, task_counts in enumerate(counts)]
    lo = torch.zeros(num_tasks, max(map(len, counts)), _LO_BINS, dtype=torch.int64)
    lo = lo.to(hi.device)
    for key in keys:
        for t, x in enumerate(ranked(key)):
            bits = magnitude_bits(x).flatten()
            for q, (top_bin, _) in enumerate(tops[t]):
                low = (bits[(bits >> 16) == top_bin] & 0xFFFF).long()
                lo[t, q] += torch.bincount(low, minlength=_LO_BINS)
    return [
        [_bits_value((top_bin << 16) | _top_bin(lo[t, q], in_bin)[0])
         for q, (top_bin, in_bin) in enumerate(task_tops)]
        for t, task_tops in enumerate(tops)
    ]  # fmt: skip


def _bits_value(bits: int) -> float:
    """The float32 whose bit pattern is ``bits``."""
    return torch.tensor(bits, dtype=torch.int32).view(torch.float32).item()
