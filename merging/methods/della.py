"""DELLA-Merging (Deep et al., "DELLA-Merging: Reducing Interference in Model Merging
through Magnitude-Based Sampling", 2024)."""

from __future__ import annotations

import torch

from merging.methods.breadcrumbs import ranks_by_magnitude
from merging.methods.dare import key_generator
from merging.methods.ties import disjoint_merge
from merging.options import number, probability
from merging.registry import merge_method
from merging.selection import Values
from merging.streaming import TaskVectors

Tensor = torch.Tensor


def keep_probabilities(x: Tensor, p: float, window: float) -> Tensor:
    """MagPrune's keep probability of every entry of ``x``: in each row along the last
    dimension (a 1-D tensor is one row), ``(1 - p) - window / 2 + window * r / (n - 1)``
    with ``r`` the entry's rank by magnitude (0 = smallest, ties to the earlier index) among
    the row's ``n`` entries; ``1 - p`` where ``n = 1``."""
    rows = x.reshape(1, -1) if x.ndim < 2 else x.reshape(-1, x.shape[-1])
    n = rows.shape[1]
    if n > 1:
        position = ranks_by_magnitude(rows, descending=False).to(x.dtype) / (n - 1)
    else:
        position = torch.full_like(rows, 0.5)
    return ((1.0 - p) - window / 2 + window * position).reshape(x.shape)


def magprune(p: float, window: float, seed: int) -> Values:
    """``values(t, key, tau) = tau * b / q`` with ``q`` :func:`keep_probabilities` and
    ``b ~ Bernoulli(q)`` per entry (``rand < q``, drawn from
    :func:`merging.methods.dare.key_generator`)."""

    def values(t: int, key: str, x: Tensor) -> Tensor:
        q = keep_probabilities(x, p, window)
        draw = torch.rand(x.shape, generator=key_generator(seed, t, key)).to(x.device)
        return torch.where(draw < q, x / q, 0)

    return values


@merge_method(
    "della",
    label="DELLA",
    reference="Deep et al., arXiv:2406.11617 (2024); declare-lab/della",
    storage="merged",
)
def della(
    tvs: TaskVectors, *, p: float = 0.3, window: float = 0.14, seed: int = 0
) -> dict[str, Tensor]:
    """DELLA: MagPrune each task vector, elect signs, take the disjoint mean (unscaled).

    MagPrune (:func:`magprune`): in each row, entries are dropped with probabilities spread
    linearly by magnitude rank over ``[p - window / 2, p + window / 2]`` (the largest
    magnitude least likely dropped) and survivors rescaled by one over their keep
    probability, ``tau_t' = tau_t * b / (1 - p_i)``, seeded per ``(seed, task, key)``.
    Then TIES' election and disjoint mean over the ``tau_t'``
    (:func:`merging.methods.ties.disjoint_merge`: ``s = sign(sum_t tau_t')``, the mean of
    the entries of sign ``s``). As the authors' ``della`` in their mergekit fork
    (``rank_magnitude_sampling``, ``epsilon = window_size / 2``, ``normalize``); their
    final ``lambda`` is the caller's alpha. Defaults: the authors' README command
    (``--drop_rate 0.3 --window_size 0.14``). Raises ``ValueError`` naming the option
    when ``p`` is not in [0, 1) or a keep probability ``1 - p +- window / 2`` leaves (0, 1].
    """
    p = probability("p", p)
    window = number("window", window)
    if window < 0 or not (0.0 < 1.0 - p - window / 2 and 1.0 - p + window / 2 <= 1.0):
        raise ValueError(
            f"option 'window' must keep the probabilities 1 - p +- window / 2 in (0, 1] "
            f"(window >= 0), got window={window!r} with p={p!r}"
        )
    values = magprune(p, window, int(seed))

    def merge_key(key: str, taus: list[Tensor]) -> Tensor:
        pruned = torch.stack([values(t, key, x) for t, x in enumerate(taus)])
        return disjoint_merge(pruned, "mean")

    return tvs.map(merge_key)
