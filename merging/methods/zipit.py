"""ZipIt! (Stoica et al., "ZipIt! Merging Models from Different Tasks without Training",
ICLR 2024): two models, full zip.

Simplifications with respect to the paper: only the full zip (every layer merged, no
partial zipping into a multi-head model); two models; greedy matching only (no optimal
matching); features are read where the caller's activation points are, and BatchNorm
parameters are merged with the same merge matrix as their layer (their running statistics are
placeholders to be reset). The ``alpha`` / ``beta`` extensions of Sec. 4.3 are implemented;
the authors' pipeline picks them per setting from alpha in {1, 0.5, 0.3, 0.1, 0.01, 1e-4} and
beta in {1, 0.25, 0.125, 0.075, 0.0375, 0} (gstoica27/ZipIt
``hyperparameter_testing.py``; shoroi/align-n-merge ``evaluation/zipit_hparam_search.py``),
which ``conf/method/zipit.yaml`` searches on the val split.

The within-model budget (``budget_count``, an artefact option as in ``merging.options``):
each model may make ``B = floor(floor(n / 2) * beta)`` merges within itself. ``"exact"``
(the paper's definition) allows exactly ``B``; ``"authors"`` is what ``match_tensors_zipit``
of both repositories does: it closes a model to within-model merges only once its counter,
decremented after each such merge, is at most 0, so a model whose ``B`` is 0 still makes one.
The two differ exactly when ``B = 0``: at the default ``beta = 0.125``, in every layer of
fewer than 16 units, and at ``beta = 0`` in every layer.

>>> merged = zipit_pair(spec, state_a, state_b, stats=pair_statistics(...), alpha=0.3)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from merging.alignment import (
    PairStats,
    PermutationSpec,
    check_pair,
    pair_stats_from,
    require_groups,
    transform_state,
)
from merging.alignment.spec import State
from merging.context import ModelContext
from merging.options import choice
from merging.registry import merge_method

BUDGET_COUNTS = ("exact", "authors")


def check_zip_options(alpha: float, beta: float, budget_count: str = "exact") -> None:
    """Raise ``ValueError`` naming the option unless ``alpha`` and ``beta`` are in [0, 1] and
    ``budget_count`` is one of :data:`BUDGET_COUNTS`."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"option {name!r} must be a number in [0, 1], got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"option {name!r} must be in [0, 1], got {value!r}")
    choice("budget_count", budget_count, BUDGET_COUNTS)


def zip_features(
    corr: torch.Tensor, alpha: float = 0.3, beta: float = 0.125, budget_count: str = "exact"
) -> torch.Tensor:
    """Greedy zip of 2n features (A's then B's) into n: the (2n, n) 0/1 unmerge matrix ``U``.

    Repeatedly merge the two clusters with the highest correlation until n remain (ties: the
    first in row-major order). A merged cluster's correlation to the others is the minimum
    over its two parts times ``alpha`` (``alpha <= 0``: a cluster is never merged again, i.e.
    pairs only). Each model may make at most ``B = floor(floor(n / 2) * beta)`` merges within
    itself (``budget_count="exact"``; ``beta = 0``: only across models, like a permutation),
    or ``max(B, 1)`` (``"authors"``, see the module docstring); a cluster counts as the model
    of its first feature.
    """
    two_n = corr.shape[0]
    n = two_n // 2
    if corr.shape != (two_n, two_n) or two_n != 2 * n:
        raise ValueError(f"zip needs a square correlation matrix of even size, got {corr.shape}")
    check_zip_options(alpha, beta, budget_count)
    sims = corr.detach().double().cpu().numpy().copy()
    sims[~np.isfinite(sims)] = 0.0
    np.fill_diagonal(sims, -np.inf)
    origin = np.repeat([0, 1], n)
    label = np.arange(two_n)
    budget = [int(n // 2 * beta + 1e-4)] * 2
    if budget_count == "exact":
        for o in (0, 1):
            if budget[o] == 0:
                sims[np.ix_(origin == o, origin == o)] = -np.inf
    active = np.ones(two_n, dtype=bool)
    for _ in range(n):
        i, j = sorted(np.unravel_index(np.argmax(sims), sims.shape))
        if sims[i, j] == -np.inf:
            raise RuntimeError("zip ran out of mergeable features")
        label[label == j] = i
        merged = np.minimum(sims[i], sims[j]) * alpha if alpha > 0 else np.full(two_n, -np.inf)
        sims[i, :], sims[:, i] = merged, merged
        sims[j, :], sims[:, j] = -np.inf, -np.inf
        sims[i, i] = -np.inf
        active[j] = False
        if origin[i] == origin[j]:
            o = origin[i]
            budget[o] -= 1
            if budget[o] <= 0:
                own = active & (origin == o)
                sims[np.ix_(own, own)] = -np.inf
    column = {c: k for k, c in enumerate(np.flatnonzero(active))}
    unmerge = torch.zeros(two_n, n, dtype=torch.float64)
    unmerge[torch.arange(two_n), torch.as_tensor([column[c] for c in label])] = 1.0
    return unmerge


def zipit_pair(
    spec: PermutationSpec,
    state_a: State,
    state_b: State,
    acts_a: Mapping[str, torch.Tensor] | None = None,
    acts_b: Mapping[str, torch.Tensor] | None = None,
    *,
    stats: Mapping[str, PairStats] | None = None,
    alpha: float = 0.3,
    beta: float = 0.125,
    budget_count: str = "exact",
) -> dict[str, torch.Tensor]:
    """Merged state from zipping A and B group by group (full zip, two models).

    Per group of n units, the 2n features ``[f_A, f_B]`` are clustered by ``zip_features``
    (``alpha``, ``beta``: Sec. 4.3 of the paper; defaults are those of the authors' code, tune
    them on validation data; ``budget_count``: see the module docstring). Unmerge
    ``U = [U_A; U_B]`` (2n x n) copies a merged feature back to its members, merge
    ``M = [M_A, M_B] = (U / cluster sizes)^T`` averages them; the merged
    weights are ``M_A W_A U_A + M_B W_B U_B`` on every axis of the spec (``transform_state``),
    and entries without a producing axis (e.g. the classifier, keys outside the spec) are
    averaged. Activations as in ``activation_matching`` (``acts_a``/``acts_b`` or ``stats``),
    one entry per spec group. BatchNorm running statistics of the result are placeholders:
    reset them (``merging.batchnorm.reset_batchnorm``).
    """
    sizes = check_pair(spec, state_a, state_b)
    stats = pair_stats_from(acts_a, acts_b, stats)
    require_groups(stats, sizes)
    merge_a, merge_b, unmerge_a, unmerge_b = {}, {}, {}, {}
    for g, n in sizes.items():
        unmerge = zip_features(stats[g].corr(), alpha, beta, budget_count)
        merge = (unmerge / unmerge.sum(0)).T
        merge_a[g], merge_b[g] = merge[:, :n], merge[:, n:]
        unmerge_a[g], unmerge_b[g] = unmerge[:n], unmerge[n:]
    za = transform_state(spec, state_a, merge_a, unmerge_a)
    zb = transform_state(spec, state_b, merge_b, unmerge_b)
    out = {}
    for key, a in za.items():
        if not a.is_floating_point():
            out[key] = a
            continue
        producing = [
            axis
            for axis, g in enumerate(spec.axes.get(key, ()))
            if g is not None and not spec.consuming(key, axis)
        ]
        if len(producing) > 1:
            raise ValueError(f"zipit: {key!r} has {len(producing)} producing axes; at most one")
        out[key] = a + zb[key] if producing else (a + zb[key]) / 2
    return out


@merge_method(
    "zipit",
    kind="models",
    label="ZipIt!",
    reference="Stoica et al., ICLR 2024; gstoica27/ZipIt",
    storage="merged",
    min_inputs=2,
)
def zipit(
    context: ModelContext, *, alpha: float = 0.3, beta: float = 0.125, budget_count: str = "exact"
) -> dict[str, torch.Tensor]:
    """Two models zipped group by group on their features over the merge batches
    (:func:`zipit_pair`: ``alpha``, the damping of a merged cluster's correlations;
    ``beta``, the share of within-model merges; ``budget_count``, ``exact`` or the
    ``authors``' count of that budget), then BatchNorm statistics recomputed."""
    check_zip_options(alpha, beta, budget_count)
    a, b = context.pair("zipit")
    stats = context.pair_stats(a, b)
    merged = zipit_pair(
        context.spec, a, b, stats=stats, alpha=alpha, beta=beta, budget_count=budget_count
    )
    return context.reset_batchnorm(merged)
