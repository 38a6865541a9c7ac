"""Exact global top-k of each task vector by magnitude, streamed key by key.

For task ``t`` and kept fraction ``density``, :func:`topk_masks` selects exactly
``n = ceil(density * N)`` entries of largest ``|tau_t|`` among all ``N`` float parameters
of that task (a product ``density * N`` within 1e-9, relative, of an integer counts as that
integer, so ``0.2`` of 10 entries keeps 2, not 3 from float noise). Nothing is
concatenated: the threshold is found on the float32 bit patterns of ``|x|`` (as int32 they
are ordered like the magnitudes), from a sample that brackets it and one exact pass that
counts the entries above the bracket and collects those inside (:func:`topk_masks`; a
radix select with two 16-bit histogram passes where the bracket misses). Entries equal to
the threshold are kept in (key order, flat index within the key) order, earliest first,
through a per-key tie quota, so masking a key is stateless and the same inputs always give
the same selection.

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
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from merging.options import TOPK_COUNTS, choice, fraction, non_negative_int
from merging.streaming import Scratch, TaskVectors, blocks

Tensor = torch.Tensor
Values = Callable[[int, str, Tensor], Tensor]
"""``values(t, key, tau_t[key])``: the tensor whose magnitudes are ranked (e.g. after DARE)."""

_HI_BINS = 1 << 15  # high 16 bits of a non-negative float32 (the sign bit is 0)
_LO_BINS = 1 << 16  # low 16 bits
_MAX_BITS = (1 << 31) - 1
_INF_BITS = 0x7F800000  # +inf: above every finite magnitude, so a threshold that keeps none
_SAMPLE_STRIDE = 127  # prime: a systematic sample of a matrix meets all its columns
_SAMPLE_SIZE = 1 << 19  # at most, per task (then every other entry, and the stride doubled)


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
        keep = magnitude_bits(values) > self.threshold
        tied = self.kept_ties(key, values)
        if tied is not None:  # flat indices in logical order: set them in a contiguous mask
            keep = keep.contiguous()
            keep.view(-1)[tied] = True
        return keep

    @property
    def cutoff(self) -> float:
        """The threshold as a magnitude: entries with ``|x| > cutoff`` are kept."""
        return _bits_value(self.threshold)

    def kept_ties(self, key: str, values: Tensor) -> Tensor | None:
        """Flat indices (ascending) of the entries of ``key`` equal to the threshold that
        are kept, the first ``quotas[key]`` of them; None where the key keeps none."""
        quota = self.quotas.get(key, 0)
        if not quota:
            return None
        return (magnitude_bits(values).reshape(-1) == self.threshold).nonzero()[:quota, 0]

    def trim(self, key: str, values: Tensor, out: Tensor) -> Tensor:
        """``values * mask(key, values)`` (float32) written into ``out`` (contiguous),
        dropped entries +0.0: :meth:`trim_block` over the whole key."""
        flat = values.to(torch.float32).reshape(-1)
        self.trim_block(flat, slice(0, flat.numel()), self.kept_ties(key, flat), out.view(-1))
        return out

    def trim_block(self, values: Tensor, block: slice, tied: Tensor | None, out: Tensor) -> None:
        """Entries ``block`` of a key's trimmed flat float32 ``values`` into ``out`` (one
        ``hardshrink`` pass at the threshold: it keeps ``|x| > cutoff``, the same comparison
        as the bits; then the kept ties, ``tied = kept_ties(key, values)``, in the block)."""
        x = values[block]
        if self.threshold < 0:
            out.copy_(x)
            return
        torch.ops.aten.hardshrink.out(x, self.cutoff, out=out)
        if tied is not None:
            ends = torch.tensor([block.start, block.stop], device=tied.device)
            first, last = torch.searchsorted(tied, ends).tolist()
            if last > first:
                index = tied[first:last] - block.start
                out[index] = x[index]


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

    Reads every task vector key by key (one tensor at a time): first a systematic sample
    (every ``_SAMPLE_STRIDE``-th magnitude, at most ``_SAMPLE_SIZE`` of them: the stride
    doubles when the sample fills; through :meth:`TaskVectors.strided`, so a lazy mapping
    that can read only those entries does), from which :func:`_band` brackets the
    threshold; then the whole of every tensor, which checks shapes, dtypes and finiteness,
    counts the entries above the band and collects those in it, and the threshold and tie
    quotas follow exactly from these. A 16-bit histogram of every entry (the cost
    of the radix select, ``bincount`` about 1 ns per entry here) is then needed only for a
    task whose threshold falls outside its band, or whose band holds far more entries than
    the sample predicts (many ties): two more reads of that task.
    ``values``, if given, transforms each tensor before ranking and must be deterministic.
    Raises ``ValueError`` naming the option.
    """
    density = fraction("density", density)
    count = choice("topk_count", count, TOPK_COUNTS)
    extra = non_negative_int("extra_entries", extra_entries)
    num_tasks, keys = len(tvs), tvs.float_keys
    scratch = Scratch()

    def ranked(t: int, key: str, checked: bool) -> Tensor:
        """The ranked tensor, flat float32."""
        if checked:  # into task t's read buffer: no fresh memory per read
            x = tvs.task(t, key, reuse=True)
        else:
            x = tvs.raw(t, key).to(tvs.device, torch.float32)
        return (x if values is None else values(t, key, x)).to(torch.float32).flatten()

    def bits(t: int, key: str, checked: bool) -> Tensor:
        """``magnitude_bits`` of the ranked tensor, flat, in a buffer reused by the next call."""
        v = ranked(t, key, checked)
        return torch.abs(v, out=scratch("abs", v.numel(), v.dtype, v.device)).view(torch.int32)

    samples = [_Store(_SAMPLE_SIZE, tvs.device) for _ in range(num_tasks)]
    stride, total = [_SAMPLE_STRIDE] * num_tasks, 0
    for key in keys:
        for t in range(num_tasks):
            if values is None:  # only the sampled entries are read (TaskVectors.strided)
                v = tvs.strided(t, key, stride[t])
            else:  # the transform needs the whole tensor
                v = ranked(t, key, checked=True)[:: stride[t]]
            while not samples[t].append(magnitude_bits(v)):
                samples[t].halve()  # full: every other entry, and half as many from now on
                stride[t] *= 2
                v = v[::2]  # the entries at the doubled stride
        total += math.prod(tvs.meta(key)[0])
    exact = count == "exact"
    n = kept_count(density, total) if exact else authors_kept_count(density, total, extra)
    if n >= total:  # keep everything (also when there is nothing to keep)
        return [TopK(-1, {}, {}, total, total) for _ in range(num_tasks)]
    if n == 0:  # density * total within float noise of 0: keep nothing
        return [TopK(_INF_BITS, {}, {}, 0, total) for _ in range(num_tasks)]
    bands: list[tuple[int, int, int] | None] = [_band(s.values, n, total) for s in samples]
    del samples
    in_band = [_Store(band[2], tvs.device) for band in bands]
    above, spans = [0] * num_tasks, [{} for _ in range(num_tasks)]
    for key in keys:
        for t, band in enumerate(bands):
            if band is None:
                continue
            v = ranked(t, key, checked=True)  # key by key: bad input is found at its first key
            count_above, inside = _above_and_between(v, *band[:2], scratch)
            above[t], start = above[t] + count_above, in_band[t].size
            if not in_band[t].append(inside):  # far more than the sample predicts (ties)
                bands[t] = None
            spans[t][key] = (start, in_band[t].size)
    out = []
    for t in range(num_tasks):
        if bands[t] is not None and above[t] < n <= above[t] + in_band[t].size:
            out.append(_resolve_in_band(in_band[t].values, spans[t], above[t], n, total, exact))
        else:  # the band missed the threshold: the exact radix select over the whole task
            hist = torch.zeros(_HI_BINS, dtype=torch.int64, device=tvs.device)
            for key in keys:
                b = bits(t, key, checked=True)
                high = scratch("int", b.numel(), b.dtype, b.device)
                torch.bitwise_right_shift(b, 16, out=high)
                hist += torch.bincount(high, minlength=_HI_BINS)
            out.append(_resolve(t, hist, n, total, bits, keys, exact, scratch))
    return out


def _band(sample: Tensor, n: int, total: int) -> tuple[int, int, int]:
    """Magnitude bits ``[lo, hi]`` that hold the ``n``-th largest of ``total`` entries with
    high probability, from a sample of their magnitude bits: the sample's entries at ranks
    ``n * S / total -+ (4 standard deviations of a binomial rank + 32)`` from the top (a
    miss costs two more reads of that task only); and a limit on the entries to collect in
    the band, twice the expected number plus 2^16 (beyond it, the band is given up)."""
    size, p = sample.numel(), n / total
    rank, spread = p * size, 4 * math.sqrt(p * (1 - p) * size) + 32
    top, bottom = math.floor(rank - spread), math.ceil(rank + spread)

    def largest(x: Tensor, r: int) -> int:  # the r-th largest entry of x
        return int(torch.kthvalue(x, x.numel() - r + 1).values)

    sample = sample.cpu()
    lo = largest(sample, bottom) if bottom <= size else 0
    sample = sample[sample >= lo]  # the top ranks, a smaller select
    hi = largest(sample, top) if top >= 1 else _MAX_BITS
    return lo, hi, 2 * math.ceil(2 * spread * total / size) + (1 << 16)


def _above_and_between(values: Tensor, lo: int, hi: int, scratch: Scratch) -> tuple[int, Tensor]:
    """How many magnitude bits of the flat float32 ``values`` exceed ``hi``, and those in
    ``[lo, hi]`` (in flat order). Block by block (:func:`merging.streaming.blocks`, the
    temporaries stay in cache); on the CPU through numpy, whose comparisons and counts
    are several times faster than torch's there."""
    count_above, parts = 0, []
    for block in blocks(values.numel()):
        size, device = block.stop - block.start, values.device
        bits = torch.abs(values[block], out=scratch("abs", size, torch.float32, device))
        bits = bits.view(torch.int32)
        gt, ge = (scratch(name, size, torch.bool, device) for name in ("gt", "ge"))
        if device.type != "cpu":
            torch.gt(bits, hi, out=gt)
            torch.ge(bits, lo, out=ge)
            count_above += int(gt.sum())
            parts.append(bits[ge & ~gt])
            continue
        b, g, e = bits.numpy(), gt.numpy(), ge.numpy()
        np.greater(b, hi, out=g)
        np.greater_equal(b, lo, out=e)
        count_above += int(np.count_nonzero(g))
        parts.append(torch.from_numpy(b[np.flatnonzero(np.logical_xor(e, g, out=e))]))
    if not parts:
        return count_above, torch.empty(0, dtype=torch.int32, device=values.device)
    return count_above, torch.cat(parts)


def _resolve_in_band(
    values: Tensor,
    spans: dict[str, tuple[int, int]],
    above: int,
    n: int,
    total: int,
    earliest_ties: bool,
) -> TopK:
    """The selection when the ``n``-th largest is among the in-band bits ``values`` (key
    ``k``'s at ``spans[k]``; ``above`` entries exceed the band): the threshold, then the
    tie quotas in key order as :func:`_resolve`."""
    threshold = int(torch.kthvalue(values.cpu(), values.numel() - (n - above) + 1).values)
    tied_needed = n - above - int((values > threshold).sum())
    ties = {k: int((values[i:j] == threshold).sum()) for k, (i, j) in spans.items()}
    ties = {k: c for k, c in ties.items() if c}
    quotas = _tie_quotas(ties, tied_needed, earliest_ties)
    return TopK(threshold, quotas, ties, n - tied_needed + sum(quotas.values()), total)


def _tie_quotas(ties: dict[str, int], needed: int, earliest_ties: bool) -> dict[str, int]:
    """Per key, in key order, how many of its ``ties[key]`` entries equal to the threshold
    are kept: the earliest up to ``needed`` in all, or every tie (the authors' count)."""
    quotas = {}
    for key, tied in ties.items():
        quotas[key] = min(tied, needed) if earliest_ties else tied
        needed -= quotas[key]
    return quotas


class _Store:
    """An int32 buffer of fixed capacity, allocated once and appended to. Many small tensors
    kept while large ones (each key's tensors) come and go fragment the heap: a list of
    per-key samples held 2 GiB more resident memory at 20 ViT-B/32 tasks (measured)."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.buffer, self.size = torch.empty(capacity, dtype=torch.int32, device=device), 0

    @property
    def values(self) -> Tensor:
        return self.buffer[: self.size]

    def append(self, x: Tensor) -> bool:
        """Append ``x`` (flat int32); False, appending nothing, if it does not fit."""
        if self.size + x.numel() > self.buffer.numel():
            return False
        self.buffer[self.size : self.size + x.numel()] = x
        self.size += x.numel()
        return True

    def halve(self) -> None:
        """Keep every other entry."""
        kept = self.values[::2].clone()
        self.size = 0
        self.append(kept)


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
    ties = {key: int(c[u == low_bin].sum()) for key, (u, c) in candidates.items()}
    quotas = _tie_quotas(ties, tied_needed, earliest_ties)
    return TopK(
        (top_bin << 16) | low_bin, quotas, ties, n - tied_needed + sum(quotas.values()), total
    )


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
    return struct.unpack("<f", struct.pack("<i", bits))[0]
