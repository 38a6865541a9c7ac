"""TALL masks (Wang et al., "Localizing Task Information for Improved Model Merging and
Compression", ICML 2024)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from merging.masks import MaskedVector, masked_multitask
from merging.methods.ties import check_ties_options, ties_merger
from merging.options import COMPARISONS, choice, per_task
from merging.registry import merge_method
from merging.streaming import Scratch, TaskVectors, parallel_blocks, summed

Tensor = torch.Tensor
Merger = Callable[[str, list[Tensor]], Tensor]
TIES_OPTIONS = ("density", "agg", "topk_count", "extra_entries", "zero_sign")
TIES_DEFAULTS = {"density": 0.2, "agg": "sum"}  # the authors' TALL/Consensus TIES: 20%, dis-sum


def multitask_merger(
    tvs: TaskVectors,
    base: str,
    density: float,
    agg: str,
    *,
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
) -> Merger:
    """Per-key ``tau_MTL``: the sum of the task vectors (``base="ta"``) or the TIES vector
    with these options (``base="ties"``, :func:`~merging.methods.ties.ties_merger`).
    Checks every option first, whichever the base."""
    base = choice("base", base, ("ta", "ties"))
    check_ties_options(density, agg, topk_count, extra_entries, zero_sign)
    if base == "ta":
        return lambda key, taus: summed(taus)
    return ties_merger(
        tvs, density, agg, topk_count=topk_count, extra_entries=extra_entries, zero_sign=zero_sign
    )


class TallMaskRule:
    """``m_t = 1{|tau_t| >= lam_t * |tau_MTL - tau_t|}`` for every task ``t``, or with ``>``
    (``comparison="strict"``, the authors' code).

    Block by block (:func:`blocks`, so the five ops per task run in cache), both sides
    computed in two reused buffers: the same float32 operations, so the same bits, as the
    formula. Float32 on the CPU through numpy's ufuncs, about 20% faster there than torch's
    (0.62-0.70 against 0.79-0.81 ns per value, 20 tasks, one thread, here); through torch
    elsewhere. ``rule(key, taus, tau_MTL)`` gives the masks (boolean, ``tau_MTL``'s shape),
    :meth:`votes` only their sum.
    """

    def __init__(self, lams: Sequence[float], comparison: str = "inclusive") -> None:
        self.lams = list(lams)
        self.strict = choice("comparison", comparison, COMPARISONS) == "strict"
        self._scratch = Scratch()

    def __call__(self, key: str, taus: list[Tensor], mtl: Tensor) -> list[Tensor]:
        masks = [torch.empty(mtl.shape, dtype=torch.bool, device=mtl.device) for _ in taus]
        array = self._kernels(taus, mtl)[0]
        flat = [array(m.view(-1)) for m in masks]
        self._run(taus, mtl, lambda t, b, w: flat[t][b])
        return masks

    def votes(self, taus: list[Tensor], mtl: Tensor) -> Tensor:
        """``sum_t m_t`` (``tau_MTL``'s shape; uint8, int16 from 256 tasks), counted block by
        block without the masks themselves (Consensus needs only the count)."""
        count = torch.uint8 if len(taus) < 256 else torch.int16
        votes = torch.zeros(mtl.shape, dtype=count, device=mtl.device)
        array = self._kernels(taus, mtl)[0]
        flat = array(votes.view(-1))

        def mask_buffer(t: int, b: slice, w: int) -> Any:
            return array(self._scratch(f"mask{w}", b.stop - b.start, torch.bool, mtl.device))

        def count_mask(b: slice, mask: Any) -> None:
            block = flat[b]
            block += mask

        self._run(taus, mtl, mask_buffer, count_mask)
        return votes

    def _kernels(self, taus: list[Tensor], mtl: Tensor) -> tuple[Callable[..., Any], ...]:
        """``(array, sub, mul, absolute, cmp, scalar)``: numpy's for float32 on the CPU,
        torch's otherwise; ``array`` views a tensor as what those ops take."""
        if self._numpy(taus, mtl):
            cmp = np.greater if self.strict else np.greater_equal
            return (lambda x: x.numpy()), np.subtract, np.multiply, np.abs, cmp, np.float32
        cmp = torch.gt if self.strict else torch.ge
        return (lambda x: x), torch.sub, torch.mul, torch.abs, cmp, float

    @staticmethod
    def _numpy(taus: list[Tensor], mtl: Tensor) -> bool:
        return mtl.device.type == "cpu" and all(x.dtype == torch.float32 for x in [mtl, *taus])

    def _run(
        self,
        taus: list[Tensor],
        mtl: Tensor,
        into: Callable[[int, slice, int], Any],
        then: Callable[[slice, Any], None] | None = None,
    ) -> None:
        """Each task ``t``'s mask on each block ``b`` written into ``into(t, b, w)`` (``w``:
        the worker), then ``then(b, mask)``. numpy's blocks are spread over torch's thread
        count (:func:`parallel_blocks`; the vote count 0.70 ns per (task, value) on one
        thread, 0.53 on two, 20 tasks, medians of 6 interleaved rounds, here); torch's
        blocks run on one thread (its ops use its own)."""
        array, sub, mul, absolute, cmp, scalar = self._kernels(taus, mtl)
        flat_mtl, flat = array(mtl.reshape(-1)), [array(x.reshape(-1)) for x in taus]

        def work(b: slice, w: int) -> None:
            size, distance = (
                array(self._scratch(f"{name}{w}", b.stop - b.start, mtl.dtype, mtl.device))
                for name in ("size", "dist")
            )
            for t, (lam, x) in enumerate(zip(self.lams, flat, strict=True)):
                sub(flat_mtl[b], x[b], out=distance)
                absolute(distance, out=distance)
                mul(distance, scalar(lam), out=distance)
                mask = cmp(absolute(x[b], out=size), distance, out=into(t, b, w))
                if then is not None:
                    then(b, mask)

        parallel_blocks(mtl.numel(), work, None if self._numpy(taus, mtl) else 1)


def streamed_tall_masks(
    tvs: TaskVectors,
    lam: float | Sequence[float],
    base: str,
    comparison: str = "inclusive",
    *,
    votes: bool = False,
    **ties_options: Any,
) -> Iterator[tuple[str, Tensor, list[Tensor] | Tensor]]:
    """``(key, tau_MTL[key], [m_1[key], ..., m_T[key]])`` for each float key, in order, or
    with ``votes`` ``(key, tau_MTL[key], sum_t m_t[key])`` (:meth:`TallMaskRule.votes`);
    ``ties_options`` as :func:`multitask_merger`'s."""
    lams = per_task("lam", lam, len(tvs))
    rule = TallMaskRule(lams, comparison)
    merged = multitask_merger(tvs, base, **ties_options)
    for key in tvs.float_keys:
        taus = tvs.tensors(key)
        mtl = merged(key, taus)
        yield key, mtl, rule.votes(taus, mtl) if votes else rule(key, taus, mtl)


def tall_masks_of(
    task_vectors: Sequence[Mapping[str, Tensor]],
    lam: float | Sequence[float],
    base: str = "ta",
    *,
    comparison: str = "inclusive",
    device: str | torch.device | None = None,
    **base_options: Any,
) -> list[dict[str, Tensor]]:
    """The TALL masks themselves: one dict of boolean tensors (float keys only) per task.

    ``base_options`` are TIES's (:data:`TIES_OPTIONS`; ``density`` 0.2 and ``agg`` "sum"
    by default) when ``base="ties"``.
    """
    unknown = sorted(set(base_options) - set(TIES_OPTIONS))
    if unknown:
        raise TypeError(
            f"tall_masks_of has no option {unknown[0]!r}; base options: {', '.join(TIES_OPTIONS)}"
        )
    tvs = TaskVectors(task_vectors, device=device)
    if len(tvs) < 2:
        raise ValueError(f"TALL masks need at least 2 task vectors, got {len(tvs)}")
    opts = {**TIES_DEFAULTS, **base_options}
    out: list[dict[str, Tensor]] = [{} for _ in range(len(tvs))]
    for key, _, masks in streamed_tall_masks(tvs, lam, base, comparison, **opts):
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
    density: float = 0.2,
    agg: str = "sum",
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
    comparison: str = "inclusive",
) -> list[MaskedVector]:
    """TALL masks: ``tau_MTL`` is the sum of the task vectors (``base="ta"``) or the TIES
    vector (``base="ties"``, options ``density``, ``agg``, ``topk_count``, ``extra_entries``,
    ``zero_sign`` as :func:`~merging.methods.ties.ties`; the authors' code uses
    ``density=0.2``, ``agg="sum"``, the defaults here); task ``t`` gets ``m_t * tau_MTL``
    with ``m_t = 1{|tau_t| >= lam_t * |tau_MTL - tau_t|}`` (the paper's rule; the authors'
    code compares with ``>``: ``comparison="strict"``). ``lam`` is one value or one per
    task; the paper picks each ``lam_t`` from {0.2, ..., 0.6} on task ``t``'s validation set.

    Returns one lazy task vector per task: ``tau_MTL`` is stored once and each mask at
    1 bit per weight (``.masks``, see :mod:`merging.masks`); a key is materialised when read.
    """
    lams = per_task("lam", lam, len(tvs))
    rule = TallMaskRule(lams, comparison)
    merged = multitask_merger(
        tvs, base, density, agg,
        topk_count=topk_count, extra_entries=extra_entries, zero_sign=zero_sign,
    )  # fmt: skip
    return masked_multitask(tvs, merged, rule)
