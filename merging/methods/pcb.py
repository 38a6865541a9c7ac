"""PCB-Merging (Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS
2024)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from merging.options import choice, fraction, number
from merging.registry import merge_method
from merging.selection import kth_largest
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor
CROSS = ("sum", "normalised")


def _position(d: int, index: int) -> int:
    """Which largest (1-based) entry ``sorted_ascending[index]`` of ``d`` entries is."""
    return d - index


@merge_method(
    "pcb",
    label="PCB-Merging",
    reference="Du et al., NeurIPS 2024; duguodong7/pcb-merging",
    storage="merged",
)
def pcb(
    tvs: TaskVectors,
    *,
    density: float = 0.1,
    clip: float = 0.01,
    cross: str = "sum",
) -> dict[str, Tensor]:
    """PCB-Merging as the authors' code computes it (``PCB_merge`` in ``pcb-merging.py``,
    ``task_para_att_merge`` in their NLP code, ``vision_source_code/pcb.py``), unscaled.

    Over each task's ``d`` float entries, flattened (quantiles are global, exact, and
    count ties as a sort does, :func:`merging.selection.kth_largest`):

    * clip: ``a_t = clamp(|tau_t|, lo_t, hi_t)`` at the ``int(d clip)``-th and
      ``int(d (1 - clip) - 1)``-th smallest magnitudes (0-based);
      ``c_t = sign(tau_t) a_t``; ``u_t = (a_t - lo_t) / (hi_t - lo_t)`` (0 where
      ``hi_t = lo_t``);
    * intra-balancing ``exp(T u_t^2)``; inter-balancing ``tanh(tau_t * S)`` with
      ``S = sum_j tau_j`` (``cross="sum"``: ``pcb-merging.py`` and the NLP code) or
      ``S = sum_j sign(tau_j) u_j`` (``"normalised"``: the ViT script);
      ``beta_t = exp(T u_t^2) tanh(tau_t * S)``;
    * drop and rescale: with ``q_t`` the ``int(d (1 - density))``-th smallest
      ``beta_t`` (0-based) and ``M_t`` the largest,
      ``w_t = (max(beta_t, q_t) - q_t) / (M_t - q_t)`` (0 where ``M_t = q_t``): the top
      ``density`` fraction of scores, min-max scaled;
    * merge: ``tau = sum_t w_t c_t / max(sum_t w_t, 1e-12)``.

    The model is ``theta_0 + alpha * tau``: the authors' ViT script fixes ``alpha = 1.2``
    (or tunes one per task by evolutionary search); here alpha is chosen on validation
    data from {0.1, ..., 3.0}. Defaults: ``density=0.1`` (``PCB_merge``'s ``pcb_ratio``;
    the ViT script uses 0.05), ``clip=0.01`` (their NLP and ViT code; ``pcb-merging.py``
    uses 1e-4), ``cross="sum"``. Six streamed reads of every task vector. Raises
    ``ValueError`` naming the option (``density`` in (0, 1], ``clip`` in [0, 0.5)).
    """
    fraction("density", density)
    if not 0.0 <= number("clip", clip) < 0.5:
        raise ValueError(f"option 'clip' must be in [0, 0.5), got {clip!r}")
    choice("cross", cross, CROSS)
    num_tasks, keys = len(tvs), tvs.float_keys
    d = sum(math.prod(tvs.meta(key)[0]) for key in keys)
    if d == 0:
        return tvs.map(lambda key, taus: torch.zeros_like(taus[0]))

    # clip bounds: two global order statistics of each task's magnitudes
    clip_counts = [_position(d, int(d * clip)), _position(d, int(d * (1 - clip) - 1))]
    bounds = kth_largest(
        keys, lambda key: [x.abs() for x in tvs.tensors(key)], [clip_counts] * num_tasks
    )

    def parts(taus: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Clipped magnitudes ``a_t`` and scores ``beta_t`` at one key."""
        mags, units = [], []
        for (low, high), x in zip(bounds, taus, strict=True):
            a = x.abs().clamp_(low, high)
            mags.append(a)
            units.append((a - low) / (high - low) if high > low else torch.zeros_like(a))
        if cross == "sum":
            s = summed(taus)
        else:
            s = summed([x.sign() * u for x, u in zip(taus, units, strict=True)])
        return mags, [
            (num_tasks * u**2).exp_() * (x * s).tanh_() for x, u in zip(taus, units, strict=True)
        ]

    def scores(key: str) -> list[Tensor]:
        return parts(tvs.tensors(key))[1]

    thresholds, largest = _score_quantiles(keys, scores, num_tasks, d, density)

    def merge_key(key: str, taus: list[Tensor]) -> Tensor:
        mags, betas = parts(taus)
        total = torch.zeros_like(taus[0])
        weight = torch.zeros_like(taus[0])
        for x, a, beta, q, top in zip(taus, mags, betas, thresholds, largest, strict=True):
            if top > q:
                w = (beta.clamp_(min=q) - q) / (top - q)
                total += x.sign() * a * w
                weight += w
        return total / weight.clamp_(min=1e-12)

    return tvs.map(merge_key)


def _score_quantiles(
    keys: list[str],
    scores: Callable[[str], list[Tensor]],
    num_tasks: int,
    d: int,
    density: float,
) -> tuple[list[float], list[float]]:
    """Each task's ``int(d (1 - density))``-th smallest score ``q_t`` (signed: counted
    among the positive, zero or negative scores) and its largest score ``M_t``."""
    positive, zero, largest = [0] * num_tasks, [0] * num_tasks, [-math.inf] * num_tasks
    for key in keys:
        for t, beta in enumerate(scores(key)):
            positive[t] += int((beta > 0).sum())
            zero[t] += int((beta == 0).sum())
            largest[t] = max(largest[t], float(beta.max()))
    n = _position(d, int(d * (1 - density)))  # q_t is the n-th largest score
    negative = [n > p + z for p, z in zip(positive, zero, strict=True)]
    # negative q_t: the (d - n + 1)-th largest of -beta_t among the negative scores; else
    # the n-th largest positive score (any valid count when q_t = 0 lies among the zeros)
    counts = [
        [d - n + 1] if neg else [min(n, max(p, 1))]
        for p, neg in zip(positive, negative, strict=True)
    ]

    def ranked(key: str) -> list[Tensor]:
        return [
            (-b if neg else b).clamp_(min=0) for b, neg in zip(scores(key), negative, strict=True)
        ]

    values = [v[0] for v in kth_largest(keys, ranked, counts)]
    thresholds = [
        -v if neg else (v if n <= p else 0.0)
        for v, neg, p in zip(values, negative, positive, strict=True)
    ]
    return thresholds, largest
