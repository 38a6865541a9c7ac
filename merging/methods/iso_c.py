"""Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
Task-Specific Subspaces", ICML 2025): isotropic merging in the common subspace."""

import torch

from merging.methods.tsv import merge_matrices
from merging.registry import merge_method
from merging.spectral import polar
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor


@merge_method(
    "iso_c",
    label="Iso-C",
    reference="Marczak et al., ICML 2025; danielm1405/iso-merging",
    storage="merged",
)
def iso_c(tvs: TaskVectors) -> dict[str, Tensor]:
    """Isotropic merging in the common subspace (Iso-C), unscaled.

    Per matrix: ``M = sum_t tau_t = U S V^T`` and ``tau = mean(S) * U V^T``, the summed
    task matrix with a flat (isotropic) spectrum, computed in float64 from the Gram matrix
    (:func:`merging.spectral.polar`). Non-matrix entries are averaged, as in the authors'
    code. The model is ``theta_0 + alpha * tau``, ``alpha`` chosen on
    validation data from {0.1, 0.2, ..., 3.0} as in the authors' evaluation code (the grid
    of ``conf/method/iso_c.yaml``).
    """

    def merge_matrix(taus: list[Tensor]) -> Tensor:
        factor, s = polar(summed(taus))
        return s.mean() * factor

    return merge_matrices(tvs, merge_matrix)
