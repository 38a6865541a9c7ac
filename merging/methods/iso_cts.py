"""Iso-CTS (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
Task-Specific Subspaces", ICML 2025): isotropic merging in common and task-specific
subspaces."""

import torch

from merging import options
from merging.methods.tsv import merge_matrices
from merging.registry import merge_method
from merging.spectral import polar, top_svd
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor


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
    :func:`merging.spectral.top_svd`): the isotropic level is the mean of
    all ``r`` kept singular values, common and task-specific. Non-matrix entries are
    averaged, as in the authors' code; ``common_fraction = 1`` gives Iso-C. The model is
    ``theta_0 + alpha * tau``, ``alpha`` chosen on validation data from {0.1, ..., 3.0} as
    in the authors' evaluation code (the grid of ``conf/method/iso_cts.yaml``).
    """
    options.fraction("common_fraction", common_fraction)

    def merge_matrix(taus: list[Tensor]) -> Tensor:
        common, per_task = _split_rank(min(taus[0].shape), len(taus), common_fraction)
        u_c, s_c, vh_c = top_svd(summed(taus), common)
        us, ss, vhs = [u_c], [s_c], [vh_c]
        if per_task:
            basis = u_c.to(taus[0].dtype)  # the projection in the task vectors' precision
            for tau in taus:
                u_t, s_t, vh_t = top_svd(tau - basis @ (basis.T @ tau), per_task)
                us.append(u_t)
                ss.append(s_t)
                vhs.append(vh_t)
        level = torch.cat(ss).mean()
        return level * (polar(torch.cat(us, 1))[0] @ polar(torch.cat(vhs, 0))[0])

    return merge_matrices(tvs, merge_matrix)
