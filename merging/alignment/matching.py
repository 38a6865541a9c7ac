"""Permutation matching of two models' hidden units (Ainsworth et al., "Git Re-Basin: Merging
Models modulo Permutation Symmetries", ICLR 2023): weight matching (Algorithm 1) and
activation matching, both solved by linear assignment."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from merging.alignment.features import Acts, PairStats, pair_stats_from
from merging.alignment.spec import PermutationSpec, State, check_pair


def linear_assignment(score: torch.Tensor) -> torch.Tensor:
    """``p`` maximising ``sum_i score[i, p[i]]`` over permutations (Hungarian algorithm)."""
    matrix = score.detach().double().cpu().numpy()
    if not np.isfinite(matrix).all():
        raise ValueError("linear assignment: the score matrix has NaN or infinite entries")
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)


def weight_matching(
    spec: PermutationSpec, state_a: State, state_b: State, max_iter: int = 100, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Permutations of B's units maximising ``sum_key <W_A, pi(W_B)>`` (Frobenius).

    Coordinate descent over the spec's groups in a random order (``seed``): for group ``g``
    with the other permutations fixed, the objective is linear in ``P_g``,
    ``C[i, j] = sum_{(key, axis) in g} <W_A[key]_i, pi_{-g}(W_B[key])_j>`` (slices along
    ``axis``), solved exactly by linear assignment (``scipy.optimize.linear_sum_assignment``).
    Stops after a full sweep in which no group improves, or after ``max_iter`` sweeps.
    The floating-point spec entries take part except ``spec.statistics`` (BatchNorm running
    mean and variance): like samuela/git-re-basin (``weight_matching.py``, whose specs list
    weights and normalisation scale/bias only) and shoroi/align-n-merge
    (``evaluation/weight_matching_resnets.py``, ``norm`` without running statistics), the
    objective covers learned weights only; ``permute_state`` still permutes the statistics.
    Returns ``{group: p}`` for ``permute_state(spec, state_b, p)``. Raises ``ValueError``
    naming ``max_iter`` / ``seed`` unless they are a positive / non-negative integer.
    The result is a local optimum: it recovers a permutation applied to a copy of A on
    networks of realistic width, but on very narrow ones (a handful of units per layer) the
    descent can stop at a wrong permutation.
    """
    for name, value, least in (("max_iter", max_iter, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise ValueError(f"option {name!r} must be {kind} integer, got {value!r}")
    sizes = check_pair(spec, state_a, state_b)
    keys = [k for k in spec.axes if k not in spec.statistics and state_a[k].is_floating_point()]
    wa = {k: state_a[k].detach().double() for k in keys}
    wb = {k: state_b[k].detach().double().to(wa[k].device) for k in keys}
    perms = {g: torch.arange(n) for g, n in sizes.items()}
    rng = np.random.default_rng(seed)
    groups = spec.groups
    for _ in range(max_iter):
        improved = False
        for g in (groups[i] for i in rng.permutation(len(groups))):
            score = _score(spec, wa, wb, perms, g, sizes[g])
            p = linear_assignment(score)
            rows = torch.arange(sizes[g])
            old = score[rows, perms[g]].sum().item()
            new = score[rows, p].sum().item()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[g] = p
                improved = True
        if not improved:
            break
    return perms


def _score(
    spec: PermutationSpec,
    wa: dict[str, torch.Tensor],
    wb: dict[str, torch.Tensor],
    perms: dict[str, torch.Tensor],
    group: str,
    n: int,
) -> torch.Tensor:
    """``C[i, j]``: inner product of A's unit ``i`` with B's unit ``j`` of ``group``, B's other
    axes permuted by the current permutations."""
    score = torch.zeros(n, n, dtype=torch.float64)
    for key, axis in spec.perm_to_axes[group]:
        if key not in wa:
            continue
        b = wb[key]
        for other, g in enumerate(spec.axes[key]):
            if g is not None and other != axis:
                b = b.index_select(other, perms[g].to(b.device))
        a_rows = wa[key].movedim(axis, 0).reshape(n, -1)
        b_rows = b.movedim(axis, 0).reshape(n, -1)
        score += (a_rows @ b_rows.T).cpu()
    return score


def activation_matching(
    acts_a: Acts | None = None,
    acts_b: Acts | None = None,
    *,
    stats: Mapping[str, PairStats] | None = None,
) -> dict[str, torch.Tensor]:
    """Per group, the permutation of B's units maximising the summed correlation with A's.

    ``C[i, j] = corr(f_A_i, f_B_j)`` over the N rows, ``p = argmax_P sum_i C[i, p[i]]`` by
    linear assignment (Li et al., "Convergent Learning", 2016; Tatro et al., NeurIPS 2020;
    Ainsworth et al., ICLR 2023). ``acts_a[g]`` / ``acts_b[g]`` are (N, n) activations on the
    same inputs; or pass ``stats`` from ``pair_statistics`` instead. Returns ``{group: p}``
    for ``permute_state(spec, state_b, p)`` (one entry per group given).
    """
    out = {}
    for g, s in pair_stats_from(acts_a, acts_b, stats).items():
        n = s.width
        out[g] = linear_assignment(s.corr()[:n, n:])
    return out
