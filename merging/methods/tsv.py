"""TSV-Merge (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model
Merging", CVPR 2025), and the per-matrix helpers the spectral methods share."""

from collections.abc import Callable

import torch

from merging import options
from merging.registry import merge_method
from merging.streaming import TaskVectors

Tensor = torch.Tensor


def orthogonalise(x: Tensor) -> Tensor:
    """The nearest matrix to ``x`` with orthonormal columns (rows, if ``x`` is wide):
    ``P Q^T`` from ``x = P S Q^T`` (orthogonal Procrustes, as in Gargiulo et al.)."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def merge_matrices(
    tvs: TaskVectors, merge_matrix: Callable[[list[Tensor]], Tensor]
) -> dict[str, Tensor]:
    """``merge_matrix`` on every 2-D float entry (2-D embeddings included); other float
    entries (biases, norms, conv kernels, class tokens) are averaged, as in the TSV and Iso
    authors' code. (That code also averages CLIP's 2-D ``text_projection``, frozen in their
    image-encoder benchmarks, where its task vector is zero and both treatments agree.)"""
    return tvs.map(
        lambda key, taus: merge_matrix(taus) if taus[0].ndim == 2 else torch.stack(taus).mean(0)
    )


@merge_method(
    "tsv",
    label="TSV-M",
    reference="Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors",
    storage="merged",
)
def tsv(tvs: TaskVectors, *, fraction: float | None = None) -> dict[str, Tensor]:
    """Task Singular Vectors merge (TSV-M), unscaled.

    Per matrix with ``tau_t = U_t S_t V_t^T`` (rank ``r``): keep each task's top ``k``
    singular triplets, ``k = floor(fraction * r)`` (``fraction=None``: ``k = floor(r / T)``,
    the paper's choice; at least 1); concatenate ``U = [U_1k .. U_Tk]``,
    ``S = diag(S_1k .. S_Tk)``, ``V = [V_1k .. V_Tk]``; decorrelate with the Procrustes
    factors ``U_perp = P_U Q_U^T`` (``U = P_U S' Q_U^T``) and likewise ``V_perp``; return
    ``U_perp S V_perp^T``. Non-matrix entries are averaged. The model is
    ``theta_0 + alpha * tau``; the authors use ``alpha = 1.0`` without a validation search.
    """
    keep = None if fraction is None else options.fraction("fraction", fraction)

    def merge_matrix(taus: list[Tensor]) -> Tensor:
        rank = min(taus[0].shape)
        k = max(1, int(keep * rank) if keep is not None else rank // len(taus))
        us, ss, vhs = [], [], []
        for tau in taus:
            u, s, vh = torch.linalg.svd(tau, full_matrices=False)
            us.append(u[:, :k])
            ss.append(s[:k])
            vhs.append(vh[:k])
        u_perp, vh_perp = orthogonalise(torch.cat(us, 1)), orthogonalise(torch.cat(vhs, 0))
        return (u_perp * torch.cat(ss)) @ vh_perp

    return merge_matrices(tvs, merge_matrix)
