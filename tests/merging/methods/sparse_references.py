"""Flatten-everything references for the sparse merge methods: every task vector becomes
one row of a (tasks x parameters) matrix. Written for clarity, not memory; the streaming
methods must agree with them.

Two kinds: the papers' definitions (top-k by a stable sort, exactly ceil(k P) entries,
``sign(0) = 0``, ``>=``), and restatements of the authors' code (``authors_*``:
nik-dim/tall_masks and prateeky2806/ties-merging's ``topk_values_mask`` on a row padded
with the zeros their checkpoints hold, ``resolve_zero_signs``, ``disjoint_merge``,
``generate_task_masks``), written from their formulas, not copied.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

StateDict = dict[str, torch.Tensor]


def float_keys(tv: StateDict) -> list[str]:
    return [key for key, x in tv.items() if x.is_floating_point()]


def flatten(tvs: list[StateDict]) -> torch.Tensor:
    """The (T, P) float32 matrix of all float entries, keys in order."""
    keys = float_keys(tvs[0])
    return torch.stack([torch.cat([tv[k].float().flatten() for k in keys]) for tv in tvs])


def unflatten(vec: torch.Tensor, like: StateDict) -> StateDict:
    """``vec`` cut back into ``like``'s float entries (in their dtypes); others copied."""
    out, offset = {}, 0
    for key, x in like.items():
        if x.is_floating_point():
            out[key] = vec[offset : offset + x.numel()].reshape(x.shape).to(x.dtype)
            offset += x.numel()
        else:
            out[key] = x
    return out


def topk_mask(row: torch.Tensor, k: float) -> torch.Tensor:
    """Top ceil(k * P) of |row| (k read as a decimal); ties go to the earliest index."""
    n = math.ceil(Fraction(str(k)) * row.numel())
    order = torch.sort(row.abs(), descending=True, stable=True).indices
    mask = torch.zeros(row.numel(), dtype=torch.bool)
    mask[order[:n]] = True
    return mask


def topk_masks(x: torch.Tensor, k: float) -> torch.Tensor:
    return torch.stack([topk_mask(row, k) for row in x])


def ties(x: torch.Tensor, k: float, agg: str) -> torch.Tensor:
    trimmed = x * topk_masks(x, k)
    agree = trimmed * trimmed.sum(0).sign() > 0
    total = (trimmed * agree).sum(0)
    return total if agg == "sum" else total / agree.sum(0).clamp(min=1)


def multitask(x: torch.Tensor, base: str, k: float = 0.2, agg: str = "sum") -> torch.Tensor:
    return x.sum(0) if base == "ta" else ties(x, k, agg)


def tall_masks(x: torch.Tensor, mtl: torch.Tensor, lams: list[float]) -> torch.Tensor:
    lam = torch.tensor(lams).unsqueeze(1)
    return x.abs() >= lam * (mtl - x).abs()


def tall_masks_strict(x: torch.Tensor, mtl: torch.Tensor, lams: list[float]) -> torch.Tensor:
    lam = torch.tensor(lams).unsqueeze(1)
    return x.abs() > lam * (mtl - x).abs()


# ---- the authors' code, restated --------------------------------------------------------


def authors_topk_masks(x: torch.Tensor, k: float, extra: int = 0) -> torch.Tensor:
    """Each row padded with ``extra`` zeros (d entries); keep ``|x| >=`` the
    ``(d - int(d k))``-th smallest padded magnitude (``kthvalue``); ``k = 1`` keeps all."""
    padded = torch.cat([x.abs(), torch.zeros(x.shape[0], extra)], 1)
    d = padded.shape[1]
    position = d - int(d * k)
    if position < 1:  # their K = 100: no mask
        return torch.ones_like(x, dtype=torch.bool)
    kth = padded.kthvalue(position, dim=1, keepdim=True).values
    return x.abs() >= kth


def authors_ties(x: torch.Tensor, k: float, agg: str, extra: int = 0) -> torch.Tensor:
    """Trim (authors' top-k), elect ``sign(sum)`` with zeros set to the sign of the sum of
    all elected signs, keep ``t > 0`` where the sign is positive and ``t < 0`` elsewhere,
    then the sum or the mean over the kept non-zero entries."""
    trimmed = x * authors_topk_masks(x, k, extra)
    sign = trimmed.sum(0).sign()
    sign[sign == 0] = sign.sum().sign()
    kept = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
    total = kept.sum(0)
    return total if agg == "sum" else total / (kept != 0).sum(0).clamp(min=1)


def authors_multitask(x: torch.Tensor, base: str, k: float, agg: str, extra: int) -> torch.Tensor:
    return x.sum(0) if base == "ta" else authors_ties(x, k, agg, extra)


def authors_emr(tvs: list[StateDict]) -> list[StateDict]:
    """``emr_merge`` (merge_vit/src/main_emr_merging.py), restated key by key: flag +1
    where the mean is > 0 else -1, masks ``tau_t * flag > 0``, ``tau_uni`` the flagged
    largest agreeing magnitude, rescaler = sum of per-tensor mean |tau_t| over sum of
    per-tensor mean |M_t tau_uni|."""
    keys = float_keys(tvs[0])
    scales, new_scales = [0.0] * len(tvs), [0.0] * len(tvs)
    unified, masks = {}, {}
    for key in keys:
        stack = torch.stack([tv[key].double() for tv in tvs])
        flag = (stack.mean(0) > 0).double() * 2 - 1
        masks[key] = stack * flag > 0
        unified[key] = (stack.abs() * masks[key]).amax(0) * flag
        for t in range(len(tvs)):
            scales[t] += float(stack[t].abs().mean())
            new_scales[t] += float((unified[key] * masks[key][t]).abs().mean())
    return [
        {key: unified[key] * masks[key][t] * (scales[t] / new_scales[t]) for key in keys}
        for t in range(len(tvs))
    ]
