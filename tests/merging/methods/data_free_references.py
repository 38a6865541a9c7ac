"""Plain restatements of the data-free baselines of issue 13, written for clarity, not memory,
and mostly in the authors' own formulation (not their code): Model Breadcrumbs' remove-then-
keep top-k, DELLA's argsort ranks and mergekit's sign mask, MagMax's running ``>=``, PCB's
sort-based clamps on the flattened (tasks x parameters) matrix, Model Stock in weight space
with angles in degrees, WUDI's autograd loss over the (out x out) products, LiNeS on the
flattened vector, TSV-C with numpy's SVD. The streaming methods must agree with them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from merging.methods.dare import key_generator
from tests.merging.methods.sparse_references import StateDict, flatten, unflatten


def per_key(tvs: list[StateDict], fn) -> StateDict:
    """``out[key] = fn(key, [tau_1[key], ...])`` on float keys; others from task 0."""
    return {
        key: fn(key, [tv[key].float() for tv in tvs]).to(x.dtype) if x.is_floating_point() else x
        for key, x in tvs[0].items()
    }


# ---- Model Breadcrumbs ------------------------------------------------------------------


def _zero_top(rows: torch.Tensor, count: int) -> torch.Tensor:
    out = rows.clone()
    for row in out:
        row[torch.topk(row.abs(), count).indices] = 0
    return out


def _keep_top(rows: torch.Tensor, count: int) -> torch.Tensor:
    out = torch.zeros_like(rows)
    for src, dst in zip(rows, out, strict=True):
        idx = torch.topk(src.abs(), count).indices
        dst[idx] = src[idx]
    return out


def breadcrumbs(tvs: list[StateDict], density: float, gamma: float, scope: str) -> StateDict:
    """Per group (layer or row): zero the ``int(gamma n)`` largest, then keep the
    ``int(density n)`` largest of what is left (``TaskVectorMiddleKeep``); sum."""

    def crumbs(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0:
            return x
        rows = x.reshape(1, -1) if scope == "layer" else x.reshape(-1, x.shape[-1])
        n = rows.shape[1]
        return _keep_top(_zero_top(rows, int(n * gamma)), int(n * density)).reshape(x.shape)

    return per_key(tvs, lambda key, taus: sum(crumbs(x) for x in taus))


# ---- DELLA ------------------------------------------------------------------------------


def della(tvs: list[StateDict], p: float, window: float, seed: int) -> StateDict:
    """Rank 1..n by magnitude per row (``argsort``), keep probability
    ``(1 - p - eps) + 2 eps (rank - 1) / (n - 1)`` with ``eps = window / 2``, rescale,
    then mergekit's ``get_mask(method="sum")`` and the count-normalised sum."""
    eps = window / 2

    def pruned(t: int, key: str, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(1, -1) if x.ndim < 2 else x.reshape(-1, x.shape[-1])
        n = rows.shape[1]
        ranks = torch.zeros_like(rows)
        for i in range(rows.shape[0]):
            ranks[i][torch.argsort(rows[i].abs(), stable=True)] = torch.arange(1, n + 1).float()
        norm = (ranks - 1) / (n - 1) if n > 1 else torch.full_like(rows, 0.5)
        prob = ((1 - p) - eps + norm * 2 * eps).reshape(x.shape)
        keep = torch.rand(x.shape, generator=key_generator(seed, t, key)) < prob
        return x * keep / prob

    def merge(key: str, taus: list[torch.Tensor]) -> torch.Tensor:
        deltas = torch.stack([pruned(t, key, x) for t, x in enumerate(taus)])
        majority = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        mask = deltas.sign() == majority
        divisor = mask.sum(0).float()
        divisor[divisor == 0] = 1
        return (deltas * mask).sum(0) / divisor

    return per_key(tvs, merge)


# ---- MagMax -----------------------------------------------------------------------------


def magmax(tvs: list[StateDict]) -> StateDict:
    """Per entry the task of largest ``|tau_t|``, the last one among ties."""

    def merge(key: str, taus: list[torch.Tensor]) -> torch.Tensor:
        stack = torch.stack(taus[::-1])  # reversed: argmax's first maximum is the last task
        index = stack.abs().argmax(0, keepdim=True)
        return stack.gather(0, index)[0]

    return per_key(tvs, merge)


# ---- PCB-Merging ------------------------------------------------------------------------


def _clamp_rows(x: torch.Tensor, low_ratio: float, high_ratio: float) -> torch.Tensor:
    d = x.shape[1]
    ordered = torch.sort(x, dim=1).values
    low = ordered[:, int(d * low_ratio)].unsqueeze(1)
    high = ordered[:, int(d * (1 - high_ratio) - 1)].unsqueeze(1)
    return torch.minimum(torch.maximum(x, low), high)


def _minmax_rows(x: torch.Tensor) -> torch.Tensor:
    low = x.min(1, keepdim=True).values
    return (x - low) / (x.max(1, keepdim=True).values - low)


def pcb(tvs: list[StateDict], density: float, clip: float, cross: str) -> StateDict:
    """PCB on the (T, d) matrix as its authors lay it out."""
    checks = flatten(tvs)
    n = checks.shape[0]
    mags = _clamp_rows(checks.abs(), clip, clip)
    unit = _minmax_rows(mags)
    other = checks.sum(0) if cross == "sum" else (checks.sign() * unit).sum(0)
    balance = torch.exp(n * unit**2) * torch.tanh(checks * other)
    scale = _minmax_rows(_clamp_rows(balance, 1 - density, 0))
    merged = (checks.sign() * mags * scale).sum(0) / (scale.sum(0)).clamp(min=1e-12)
    return unflatten(merged, tvs[0])


# ---- Model Stock ------------------------------------------------------------------------


def model_stock(pretrained: StateDict, finetuned: list[StateDict]) -> StateDict:
    """Weights: per key the mean pairwise angle (degrees) between ``theta_t - theta_0``,
    ``t = k cos / ((k - 1) cos + 1)``, ``t * mean_t theta_t + (1 - t) theta_0``."""
    out = {}
    k = len(finetuned)
    for key, w0 in pretrained.items():
        if not w0.is_floating_point():
            out[key] = w0
            continue
        deltas = [(w[key] - w0).double().flatten().numpy() for w in finetuned]
        angles = []
        for s in range(k):
            for t in range(s + 1, k):
                cos = (
                    deltas[s] @ deltas[t] / (np.linalg.norm(deltas[s]) * np.linalg.norm(deltas[t]))
                )
                angles.append(np.rad2deg(np.arccos(np.clip(cos, -1, 1))))
        cos = math.cos(math.radians(sum(angles) / len(angles)))
        ratio = k * cos / ((k - 1) * cos + 1) if cos > 0 else 0.0  # no move past 90 degrees
        average = sum(w[key].double() for w in finetuned) / k
        out[key] = (ratio * average + (1 - ratio) * w0.double()).to(w0.dtype)
    return out


# ---- WUDI-Merging -----------------------------------------------------------------------


def wudi(tvs: list[StateDict], steps: int, lr: float) -> StateDict:
    """Adam on ``sum_t sum((tau - tau_t) tau_t^T)^2 / ||tau_t||^2`` with autograd, as the
    authors write the loss; non-matrix entries averaged."""

    def merge(key: str, taus: list[torch.Tensor]) -> torch.Tensor:
        stack = torch.stack(taus)
        if stack.ndim != 3:
            return stack.mean(0)
        merged = torch.nn.Parameter(stack.sum(0))
        optimizer = torch.optim.Adam([merged], lr=lr)
        norms = stack.flatten(1).norm(dim=1) ** 2
        for _ in range(steps):
            products = (merged.unsqueeze(0) - stack) @ stack.transpose(1, 2)
            loss = (products**2 / norms[:, None, None]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return merged.detach()

    return per_key(tvs, merge)


# ---- LiNeS ------------------------------------------------------------------------------


def lines(
    tvs: list[StateDict], merged: StateDict, depths: dict[str, float | None], depth_scale: float
) -> StateDict:
    """``(lam + depth_scale * depth) * merged`` with ``lam = ||sum_t tau_t||_1 /
    (T ||merged||_1)`` over the flattened float entries; ``lam`` outside the blocks."""
    total = flatten(tvs).sum(0).abs().double().sum()
    lam = float(total / (len(tvs) * flatten([merged])[0].abs().double().sum()))
    return {
        key: (x * (lam + depth_scale * (depths[key] or 0.0))) if x.is_floating_point() else x
        for key, x in merged.items()
    }


# ---- TSV-C ------------------------------------------------------------------------------


def tsv_c(tvs: list[StateDict]) -> list[StateDict]:
    """Each task's matrices truncated to ``max(1, floor(r / T))`` singular triplets
    (numpy's SVD); other entries unchanged."""
    n = len(tvs)

    def compress(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or not x.is_floating_point():
            return x
        u, s, vh = np.linalg.svd(x.double().numpy(), full_matrices=False)
        k = max(1, len(s) // n)
        return torch.from_numpy((u[:, :k] * s[:k]) @ vh[:k]).to(x.dtype)

    return [{key: compress(x) for key, x in tv.items()} for tv in tvs]
