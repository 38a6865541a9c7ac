"""TSV-Merge (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model
Merging", CVPR 2025), and the per-matrix helpers the spectral methods share."""

from collections.abc import Callable

import torch

from merging import options
from merging.registry import merge_method
from merging.spectral import polar, top_svd
from merging.streaming import TaskVectors

Tensor = torch.Tensor


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


def triplets_per_task(rank: int, num_tasks: int, keep: float | None, rank_count: str) -> int:
    """Singular triplets each task keeps of a matrix of rank ``rank``.

    ``keep`` None: ``floor(rank / T)``; else ``floor(keep * rank)``. ``rank_count``
    "at_least_one" keeps at least one; "authors" computes ``int(rank * (1 / T))`` (or
    ``int(keep * rank)``) as the authors' ``compute_and_sum_svd_mem_reduction`` does, which
    is 0, a zero matrix, when ``rank < T``.
    """
    if rank_count == "authors":
        return int(rank * (1 / num_tasks)) if keep is None else int(keep * rank)
    return max(1, rank // num_tasks if keep is None else int(keep * rank))


@merge_method(
    "tsv",
    label="TSV-M",
    reference="Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors",
    storage="merged",
)
def tsv(
    tvs: TaskVectors, *, fraction: float | None = None, rank_count: str = "at_least_one"
) -> dict[str, Tensor]:
    """Task Singular Vectors merge (TSV-M), unscaled.

    Per matrix with ``tau_t = U_t S_t V_t^T`` (rank ``r``): keep each task's top ``k``
    singular triplets, ``k = floor(fraction * r)`` (``fraction=None``: ``k = floor(r / T)``,
    the paper's choice), at least 1 (``rank_count="at_least_one"``; ``"authors"``: 0 when
    ``r < T`` as in the authors' code, so that matrix merges to 0, see
    :func:`triplets_per_task`); concatenate ``U = [U_1k .. U_Tk]``,
    ``S = diag(S_1k .. S_Tk)``, ``V = [V_1k .. V_Tk]``; decorrelate with the Procrustes
    factors ``U_perp = P_U Q_U^T`` (``U = P_U S' Q_U^T``) and likewise ``V_perp``; return
    ``U_perp S V_perp^T``. Non-matrix entries are averaged. Only the top ``k`` triplets are
    computed, in float64 (:func:`merging.spectral.top_svd`, :func:`merging.spectral.polar`).
    The model is ``theta_0 + alpha * tau``; the authors choose ``alpha`` on validation data from
    {0.1, 0.2, ..., 3.0} (``np.linspace(0, 3, 31)[1:]`` in their evaluation code), the
    grid of ``conf/method/tsv.yaml``.
    """
    keep = None if fraction is None else options.fraction("fraction", fraction)
    rank_count = options.choice("rank_count", rank_count, options.RANK_COUNTS)

    def merge_matrix(taus: list[Tensor]) -> Tensor:
        k = triplets_per_task(min(taus[0].shape), len(taus), keep, rank_count)
        if k == 0:
            return torch.zeros_like(taus[0])
        us, ss, vhs = zip(*(top_svd(tau, k) for tau in taus), strict=True)
        u_perp, _ = polar(torch.cat(us, 1))
        vh_perp, _ = polar(torch.cat(vhs, 0))
        return (u_perp * torch.cat(ss)) @ vh_perp

    return merge_matrices(tvs, merge_matrix)
