"""CCA Merge (Horoi et al., "Harmony in Diversity: Merging Neural Networks with Canonical
Correlation Analysis", ICML 2024).

>>> merged = cca_merge_pair(spec, state_a, state_b, stats=pair_statistics(...), gamma=0.1)

The ridge ``gamma`` is absolute, ``S + gamma I``, as in the authors' ``match_tensors_cca``
(shoroi/align-n-merge, ``core/matching_functions.py``, default 0.1); their pipeline picks
it per setting from {1e7, 1e6, ..., 1e-6} (``evaluation/cca_hparam_search.py``), which
``conf/method/cca_merge.yaml`` searches on the val split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
from merging.registry import merge_method


def _sym_power(s: torch.Tensor, power: float) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(torch.finfo(w.dtype).tiny) ** power) @ v.T


def cca_maps(stats: PairStats, gamma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, T^{-1})``: ``T f_B`` approximates ``f_A`` through their canonical correlations.

    With ``S_aa, S_bb`` the covariances plus the absolute ridge ``gamma * I`` and
    ``S_aa^{-1/2} S_ab S_bb^{-1/2} = U diag(rho) V^T``, the canonical directions are
    ``P_A = S_aa^{-1/2} U``, ``P_B = S_bb^{-1/2} V``; B's canonical variables put in A's basis
    give ``T = P_A^{-T} P_B^T = S_aa^{1/2} U V^T S_bb^{-1/2}`` and
    ``T^{-1} = S_bb^{1/2} V U^T S_aa^{-1/2}`` (the authors' ``y_map^T`` and unmerge map). As
    ``gamma`` grows, ``T`` tends to the orthogonal Procrustes rotation ``U V^T`` of the
    cross-covariance. Raises ``ValueError`` for a negative or infinite ``gamma``.
    """
    check_gamma(gamma)
    n = stats.width
    cov = stats.cov
    eye = torch.eye(n, dtype=cov.dtype, device=cov.device)
    s_aa, s_bb, s_ab = cov[:n, :n] + gamma * eye, cov[n:, n:] + gamma * eye, cov[:n, n:]
    aa_half, aa_inv_half = _sym_power(s_aa, 0.5), _sym_power(s_aa, -0.5)
    bb_half, bb_inv_half = _sym_power(s_bb, 0.5), _sym_power(s_bb, -0.5)
    u, _, vh = torch.linalg.svd(aa_inv_half @ s_ab @ bb_inv_half)
    t = aa_half @ u @ vh @ bb_inv_half
    t_inv = bb_half @ vh.T @ u.T @ aa_inv_half
    return t.cpu(), t_inv.cpu()


def check_gamma(gamma: float) -> None:
    """Raise ``ValueError`` naming the option unless ``gamma`` is a finite non-negative
    number (an infinite ridge makes the covariances infinite: ``eigh`` fails)."""
    bad = isinstance(gamma, bool) or not isinstance(gamma, int | float)
    if bad or not 0 <= gamma < math.inf:
        raise ValueError(f"option 'gamma' must be a finite non-negative number, got {gamma!r}")


def cca_merge_pair(
    spec: PermutationSpec,
    state_a: State,
    state_b: State,
    acts_a: Mapping[str, torch.Tensor] | None = None,
    acts_b: Mapping[str, torch.Tensor] | None = None,
    *,
    stats: Mapping[str, PairStats] | None = None,
    gamma: float = 0.1,
) -> dict[str, torch.Tensor]:
    """``(W_A + T(W_B)) / 2`` with B's features mapped into A's basis by CCA, group by group.

    Per group, ``cca_maps`` gives ``T`` (B's features -> A's basis); B's producing axes are
    multiplied by ``T`` and its consuming axes by ``T^{-1}`` (``transform_state``), which for a
    linear network leaves B's function unchanged; then A and transformed B are averaged.
    ``gamma``: the absolute ridge of :func:`cca_maps`. Activations as in
    ``activation_matching`` (``acts_a``/``acts_b`` or ``stats``), one entry per spec group.
    BatchNorm parameters go through ``T`` like biases, as in the authors' code; the running
    statistics of the result are placeholders: reset them (``merging.batchnorm.reset_batchnorm``).
    Unlike a permutation, a dense ``T`` commutes with neither ReLU nor per-channel BatchNorm, so
    the transformed B alone no longer computes B's function; the merge relies on ``T f_B`` being
    close to ``f_A``.
    """
    sizes = check_pair(spec, state_a, state_b)
    stats = pair_stats_from(acts_a, acts_b, stats)
    require_groups(stats, sizes)
    maps = {g: cca_maps(stats[g], gamma) for g in sizes}
    merge, unmerge = {g: m[0] for g, m in maps.items()}, {g: m[1] for g, m in maps.items()}
    tb = transform_state(spec, state_b, merge, unmerge)
    return {key: (a + tb[key]) / 2 if a.is_floating_point() else a for key, a in state_a.items()}


@merge_method(
    "cca_merge",
    kind="models",
    label="CCA Merge",
    reference="Horoi et al., ICML 2024; shoroi/align-n-merge",
    storage="merged",
    min_inputs=2,
)
def cca_merge(context: ModelContext, *, gamma: float = 0.1) -> dict[str, torch.Tensor]:
    """Two models merged in the basis of their canonical correlations on the merge batches
    (:func:`cca_merge_pair`, absolute ridge ``gamma``), then BatchNorm statistics
    recomputed."""
    check_gamma(gamma)
    a, b = context.pair("cca_merge")
    stats = context.pair_stats(a, b)
    return context.reset_batchnorm(cca_merge_pair(context.spec, a, b, stats=stats, gamma=gamma))
