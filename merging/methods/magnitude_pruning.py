"""Magnitude pruning of each task vector: the task-specific compression baseline of
Wang et al., "Localizing Task Information for Improved Model Merging and Compression",
ICML 2024."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from merging.masks import MaskedVector, PackedMask, pack_mask
from merging.registry import merge_method
from merging.selection import topk_masks
from merging.streaming import TaskVectors

Tensor = torch.Tensor


class _StoredTask(Mapping[str, Tensor]):
    """Task ``t``'s entries as stored; non-float entries are carried from task 0."""

    def __init__(self, tvs: TaskVectors, t: int) -> None:
        self.tvs, self.t = tvs, t

    def __getitem__(self, key: str) -> Tensor:
        return self.tvs.raw(self.t if self.tvs.is_float(key) else 0, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tvs.keys)

    def __len__(self) -> int:
        return len(self.tvs.keys)


@merge_method(
    "magnitude_pruning",
    label="Magnitude pruning",
    reference="Wang et al., ICML 2024 (baseline)",
    storage="masks_lower_bound",
    task_specific=True,
)
def magnitude_pruning(
    tvs: TaskVectors,
    *,
    density: float = 0.1,
    topk_count: str = "exact",
    extra_entries: int = 0,
) -> list[MaskedVector]:
    """Task ``t`` keeps its own top-``density`` fraction by magnitude, globally over all of
    its parameters: ``tau_t * 1{|tau_t| in the top density of |tau_t|}`` (exact,
    :mod:`merging.selection`; ``topk_count="authors"`` with ``extra_entries`` counts as the
    TALL-masks authors' top-k does, :mod:`merging.options`).

    Returns one lazy task vector per task: its mask at 1 bit per weight (``.masks``) over
    the input task vector, which is read again (so it must stay readable) when a key is read.
    """
    selections = topk_masks(tvs, density, count=topk_count, extra_entries=extra_entries)
    masks: list[dict[str, PackedMask]] = [{} for _ in range(len(tvs))]
    for key in tvs.float_keys:
        for t, (s, m) in enumerate(zip(selections, masks, strict=True)):
            m[key] = pack_mask(s.mask(key, tvs.task(t, key, reuse=True)), key)
    return [MaskedVector(_StoredTask(tvs, t), m) for t, m in enumerate(masks)]
