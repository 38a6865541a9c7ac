"""Flatten-everything references for the sparse merge methods: every task vector becomes
one row of a (tasks x parameters) matrix, top-k is a stable sort. Written for clarity,
not memory; the streaming methods must agree with them."""

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
