"""TSV-Compress (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in
Model Merging", CVPR 2025): each task kept as a low-rank approximation of its layers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from merging import options
from merging.methods.tsv import triplets_per_task
from merging.registry import merge_method
from merging.spectral import top_svd
from merging.streaming import TaskVectors

Tensor = torch.Tensor
Factors = tuple[Tensor, Tensor, Tensor]


class LowRankVector(Mapping[str, Tensor]):
    """One task's vector as stored, keys in the order ``keys``: ``factors[key] =
    (U, S, V^T)`` for its matrices, read as ``U diag(S) V^T`` in ``dtypes[key]`` when the
    key is read; every other key reads ``full[key]`` as it is."""

    def __init__(
        self,
        keys: list[str],
        factors: Mapping[str, Factors],
        full: Mapping[str, Tensor],
        dtypes: Mapping[str, torch.dtype],
    ) -> None:
        self.keys_, self.factors, self.full, self.dtypes = keys, factors, full, dtypes

    def __getitem__(self, key: str) -> Tensor:
        if key in self.factors:
            u, s, vh = self.factors[key]
            return ((u * s) @ vh).to(self.dtypes[key])
        return self.full[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


@merge_method(
    "tsv_c",
    label="TSV-C",
    reference="Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors",
    storage="low_rank",
    task_specific=True,
)
def tsv_c(tvs: TaskVectors, *, rank_count: str = "at_least_one") -> list[LowRankVector]:
    """TSV-C: task ``t`` keeps, of each matrix ``tau_t = U S V^T`` of rank ``r``, its top
    ``k`` singular triplets, ``tau_t ~ U_k S_k V_k^T`` with ``k = floor(r / T)``
    (the authors' ``compress_tv(task_vectors, 1 / T)``), at least 1
    (``rank_count="at_least_one"``; ``"authors"``: ``int(r * (1 / T))``, 0 and a zero
    matrix when ``r < T``, :func:`merging.methods.tsv.triplets_per_task`); its other
    entries (biases, norms, conv kernels) whole. Serve task ``t`` with
    ``theta_0 + tau_t`` (``alpha = 1``, as the authors evaluate it).

    Only the top ``k`` triplets are computed (:func:`merging.spectral.top_svd`). Returns one
    lazy task vector per task holding the factors (float32, on the CPU); a
    matrix is rebuilt in the input dtype when its key is read. Storage: the rule
    ``low_rank`` of :mod:`merging.storage` (``k (m + n + 1)`` floats per task and
    ``m x n`` matrix). Raises ``ValueError`` naming ``rank_count``.
    """
    rank_count = options.choice("rank_count", rank_count, options.RANK_COUNTS)
    num_tasks = len(tvs)
    factors: list[dict[str, Factors]] = [{} for _ in range(num_tasks)]
    full: list[dict[str, Tensor]] = [{} for _ in range(num_tasks)]
    dtypes: dict[str, torch.dtype] = {}
    for key in tvs.keys:
        if not tvs.is_float(key):
            for f in full:
                f[key] = tvs.raw(0, key)
            continue
        taus = tvs.tensors(key)
        dtypes[key] = tvs.meta(key)[1]
        for t, x in enumerate(taus):
            if x.ndim != 2 or not x.numel():
                full[t][key] = tvs.finish(key, x)
                continue
            k = triplets_per_task(min(x.shape), num_tasks, None, rank_count)
            u, s, vh = (f.to("cpu", torch.float32) for f in top_svd(x, k))
            factors[t][key] = (u, s, vh)
    return [LowRankVector(tvs.keys, f, g, dtypes) for f, g in zip(factors, full, strict=True)]
