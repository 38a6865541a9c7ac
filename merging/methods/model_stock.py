"""Model Stock (Jang et al., "Model Stock: All we need is just a few fine-tuned models",
ECCV 2024)."""

from __future__ import annotations

import itertools
import math

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor


def mean_angle(taus: list[Tensor]) -> float:
    """The mean over all pairs ``s < t`` of the angle (radians) between ``tau_s`` and
    ``tau_t`` as flat vectors, computed in float64; a pair with a zero vector counts as
    orthogonal (pi / 2)."""
    flat = [x.flatten().double() for x in taus]
    norms = [float(x.norm()) for x in flat]
    angles = []
    for s, t in itertools.combinations(range(len(flat)), 2):
        denom = norms[s] * norms[t]
        cos = float(flat[s] @ flat[t]) / denom if denom > 0 else 0.0
        angles.append(math.acos(min(1.0, max(-1.0, cos))))
    return sum(angles) / len(angles)


def stock_ratio(num: int, angle: float) -> float:
    """Model Stock's interpolation ratio ``t = N cos(a) / (1 + (N - 1) cos(a))``, 0 when
    ``cos(a) <= 0``."""
    cos = math.cos(angle)
    return num * cos / (1.0 + (num - 1) * cos) if cos > 0 else 0.0


@merge_method(
    "model_stock",
    label="Model Stock",
    reference="Jang et al., ECCV 2024 (no code released: naver-ai/model-stock); "
    "tanganke/fusion_bench ModelStock",
    storage="merged",
    min_inputs=2,
)
def model_stock(tvs: TaskVectors) -> dict[str, Tensor]:
    """Model Stock, per parameter tensor ("layer-wise"): with ``a`` the angle between the
    fine-tuned weights seen from ``theta_0`` (the angle between ``tau_s`` and ``tau_t``;
    for ``N > 2`` the mean over all pairs, :func:`mean_angle`), the merged weights are
    ``theta_0 + t (mean_t theta_t - theta_0)``, ``t = N cos(a) / (1 + (N - 1) cos(a))``
    (:func:`stock_ratio`). As a task vector: ``tau = t * mean_t tau_t``, used with
    ``alpha = 1`` (the ratio is the method's own interpolation).

    The paper derives ``t`` for N models whose pairwise angles are equal; the mean of the
    pairwise angles for ``N > 2`` follows FusionBench's ``ModelStock`` (the authors' code
    is not public). Non-float entries are carried. The paper's geometry has acute angles
    (``0 < t <= 1``); where the mean angle is 90 degrees or more (``cos(a) <= 0``, e.g. a
    scalar entry the experts move in opposite directions), ``t = 0``: the entry stays at
    ``theta_0``. (The formula itself would give ``t <= 0``, and divide by zero at
    ``cos(a) = -1 / (N - 1)``; FusionBench adds 1e-8 to the denominator.)
    """
    n = len(tvs)
    return tvs.map(lambda key, taus: summed(taus).mul_(stock_ratio(n, mean_angle(taus)) / n))
