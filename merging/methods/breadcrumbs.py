"""Model Breadcrumbs (Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model
Merging with Sparse Masks", ECCV 2024)."""

from __future__ import annotations

import torch

from merging.options import choice, fraction, probability
from merging.registry import merge_method
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor
SCOPES = ("layer", "row")


def ranks_by_magnitude(rows: Tensor, descending: bool) -> Tensor:
    """Each entry's 0-based position when its row of ``rows`` (2-D) is sorted by magnitude
    (ties: the earlier index first, a stable sort)."""
    order = torch.sort(rows.abs(), dim=1, descending=descending, stable=True).indices
    positions = torch.arange(rows.shape[1], device=rows.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def breadcrumb_mask(x: Tensor, density: float, gamma: float, scope: str) -> Tensor:
    """Boolean mask of ``x``'s breadcrumbs: in each group of ``n`` entries (the whole
    tensor for ``scope="layer"``, each row along the last dimension for ``"row"``; a 1-D
    tensor is one row) drop the ``int(gamma * n)`` largest magnitudes, keep the next
    ``int(density * n)`` and drop the rest. A 0-d tensor is kept whole."""
    if x.ndim == 0:
        return torch.ones_like(x, dtype=torch.bool)
    rows = x.reshape(1, -1) if scope == "layer" else x.reshape(-1, x.shape[-1])
    n = rows.shape[1]
    removed, kept = int(gamma * n), int(density * n)
    rank = ranks_by_magnitude(rows, descending=True)
    return ((rank >= removed) & (rank < removed + kept)).reshape(x.shape)


@merge_method(
    "breadcrumbs",
    label="Model Breadcrumbs",
    reference="Davari & Belilovsky, ECCV 2024; rezazzr/breadcrumbs",
    storage="merged",
)
def breadcrumbs(
    tvs: TaskVectors,
    *,
    density: float = 0.15,
    gamma: float = 0.006,
    scope: str = "layer",
) -> dict[str, Tensor]:
    """Model Breadcrumbs: mask each task vector's outliers and negligible entries, then sum,
    ``tau = sum_t m_t * tau_t`` (unscaled; the model is ``theta_0 + alpha * tau``).

    ``m_t`` (:func:`breadcrumb_mask`) drops the fraction ``gamma`` of largest magnitudes
    (outliers) and keeps the fraction ``density`` that follows them, per layer (``scope``
    "layer", the paper's layer-wise masks) or per row of each tensor along its last
    dimension (``"row"``, what the authors' ``TaskVectorMiddleKeep`` does: ``top_k_remove``
    = ``gamma`` then ``top_k_keep`` = ``density``, counts ``int(fraction * n)``). Ties in
    magnitude go to the earlier index. Defaults: the starting point of the authors'
    hyperparameter search (``find_best_hyperparam.py``: beta 0.15, gamma 0.006); the
    paper chooses alpha on validation data. Raises ``ValueError`` naming the option.
    """
    fraction("density", density)
    probability("gamma", gamma)
    choice("scope", scope, SCOPES)
    return tvs.map(
        lambda key, taus: summed([x * breadcrumb_mask(x, density, gamma, scope) for x in taus])
    )
