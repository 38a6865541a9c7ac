"""Iso-CTS (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
Task-Specific Subspaces", ICML 2025): isotropic merging in common and task-specific
subspaces."""

import torch

from merging import options
from merging.methods.tsv import merge_matrices
from merging.registry import merge_method
from merging.spectral import polar, top_svd, top_svd_outside
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor
Parts = tuple[Tensor, list[Tensor], list[Tensor]]
ORTHOGONAL = 1e-8
"""Largest ``|U_c^T U_t|`` entry for which the task directions count as orthogonal to the
common subspace (float64 rounding leaves ~1e-12)."""


def _split_rank(rank: int, num_tasks: int, common_fraction: float) -> tuple[int, int]:
    """``(k, d)``: ``k`` common directions and ``d`` per task, ``k + T d = rank``.

    ``d = round((rank - floor(common_fraction * rank)) / T)`` as in the authors' code,
    capped so that ``T d <= rank``; ``d = 0`` (rank too small) reduces Iso-CTS to Iso-C.
    """
    per_task = min(round((rank - int(common_fraction * rank)) / num_tasks), rank // num_tasks)
    return rank - num_tasks * per_task, per_task


@merge_method(
    "iso_cts",
    label="Iso-CTS",
    reference="Marczak et al., ICML 2025; danielm1405/iso-merging",
    storage="merged",
)
def iso_cts(tvs: TaskVectors, *, common_fraction: float = 0.8) -> dict[str, Tensor]:
    """Isotropic merging in common and task-specific subspaces (Iso-CTS), unscaled.

    Per matrix of rank ``r``: the common subspace is the top ``k`` singular triplets
    ``U_c S_c V_c^T`` of ``sum_t tau_t`` (``k ~ common_fraction * r``). Each task adds the
    top ``d = (r - k) / T`` triplets ``U_t S_t V_t^T`` of its part outside the common
    subspace, ``tau_t - U_c U_c^T tau_t``. With ``U = [U_c, U_1 .. U_T]``,
    ``S = [S_c, S_1 .. S_T]`` and ``V`` likewise (``r`` directions in all), the merged
    matrix is ``mean(S) * U_perp V_perp^T``, the factors orthogonalised by Procrustes
    (:func:`merging.spectral.polar`; only the needed triplets are computed, in float64,
    :func:`merging.spectral.top_svd`; for ``rows <= cols`` through the complement of the
    common subspace, :func:`_complement_parts`): the isotropic level is the mean of
    all ``r`` kept singular values, common and task-specific. Non-matrix entries are
    averaged, as in the authors' code; ``common_fraction = 1`` gives Iso-C. The model is
    ``theta_0 + alpha * tau``, ``alpha`` chosen on validation data from {0.1, ..., 3.0} as
    in the authors' evaluation code (the grid of ``conf/method/iso_cts.yaml``).
    """
    options.fraction("common_fraction", common_fraction)

    def merge_matrix(taus: list[Tensor]) -> Tensor:
        rows, cols = taus[0].shape
        common, per_task = _split_rank(min(rows, cols), len(taus), common_fraction)
        if per_task and rows <= cols:  # else rows > cols, or Iso-C
            u_perp, ss, vhs = _complement_parts(summed(taus), taus, common, per_task)
        else:
            u_perp, ss, vhs = _projected_parts(summed(taus), taus, common, per_task)
        return torch.cat(ss).mean() * (u_perp @ polar(torch.cat(vhs, 0))[0])

    return merge_matrices(tvs, merge_matrix)


def _complement_parts(total: Tensor, taus: list[Tensor], common: int, per_task: int) -> Parts:
    """``(U_perp, [S_c, S_1 ..], [V_c^T, V_1^T ..])`` for ``rows <= cols``, where the summed
    matrix's left singular vectors ``U = [U_c, U_r]`` are a square orthogonal basis: the part
    of ``tau_t`` outside the common subspace is ``U_r (U_r^T tau_t)``, so its triplets come
    from the small ``(T d) x cols`` matrix ``U_r^T tau_t`` (``U_t = U_r Z_t``), and with
    ``Z = [Z_1 .. Z_T]`` (square, ``k + T d = rows``) the Procrustes factor of
    ``[U_c, U_r Z]`` is ``[U_c, U_r polar(Z)]``."""
    u, s, vh = top_svd(total, total.shape[0])
    rest = u[:, common:]
    coordinates = rest.T.to(taus[0].dtype)  # in the task vectors' precision, as before
    zs, ss, vhs = [], [s[:common]], [vh[:common]]
    for tau in taus:
        z, s_t, vh_t = top_svd(coordinates @ tau, per_task)
        zs.append(z)
        ss.append(s_t)
        vhs.append(vh_t)
    return torch.cat([u[:, :common], rest @ polar(torch.cat(zs, 1))[0]], 1), ss, vhs


def _projected_parts(total: Tensor, taus: list[Tensor], common: int, per_task: int) -> Parts:
    """As :func:`_complement_parts` for ``rows > cols`` (or ``d = 0``): each task's triplets
    of ``tau_t - U_c U_c^T tau_t`` (:func:`merging.spectral.top_svd_outside`). Those
    ``U_t`` are orthogonal to ``U_c`` (checked: not so for the arbitrary vectors of zero
    singular values, when a task has fewer than ``d`` directions outside), so the Procrustes
    factor of ``[U_c, U_1 .. U_T]`` is ``[U_c, polar([U_1 .. U_T])]``, from a ``T d x T d``
    Gram matrix."""
    u_c, s_c, vh_c = top_svd(total, common)
    if not per_task:
        return u_c, [s_c], [vh_c]
    us, ss, vhs = [], [s_c], [vh_c]
    for tau in taus:
        u_t, s_t, vh_t = top_svd_outside(tau, u_c, per_task)
        us.append(u_t)
        ss.append(s_t)
        vhs.append(vh_t)
    z = torch.cat(us, 1)
    if (u_c.T @ z).abs().max() < ORTHOGONAL:
        return torch.cat([u_c, polar(z)[0]], 1), ss, vhs
    return polar(torch.cat([u_c, z], 1))[0], ss, vhs
