"""DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch", ICML 2024)."""

from __future__ import annotations

import hashlib

import torch

from merging.methods.ties import check_ties_options, ties_merger
from merging.options import choice, probability
from merging.registry import merge_method
from merging.selection import Values
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor


def key_generator(seed: int, t: int, key: str) -> torch.Generator:
    """A CPU generator seeded by a hash of ``(seed, t, key)``: random draws for task ``t``'s
    tensor at ``key`` that do not depend on the order keys are read in, the device, or how
    often they are read (DARE, DELLA)."""
    digest = hashlib.blake2b(f"{seed}/{t}/{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def drop_and_rescale(p: float, seed: int) -> Values:
    """``values(t, key, tau) = tau * b / (1 - p)`` with ``b ~ Bernoulli(1 - p)`` per entry,
    drawn from :func:`key_generator`."""

    def values(t: int, key: str, x: Tensor) -> Tensor:
        keep = torch.rand(x.shape, generator=key_generator(seed, t, key)) >= p
        return torch.where(keep.to(x.device), x / (1.0 - p), 0)

    return values


@merge_method(
    "dare",
    label="DARE + TA",
    reference="Yu et al., ICML 2024 (DARE)",
    storage="merged",
)
def dare(
    tvs: TaskVectors,
    *,
    p: float = 0.5,
    seed: int = 0,
    base: str = "ta",
    density: float = 0.2,
    agg: str = "mean",
    topk_count: str = "exact",
    extra_entries: int = 0,
    zero_sign: str = "zero",
) -> dict[str, Tensor]:
    """DARE: drop each entry of each ``tau_t`` with probability ``p`` and rescale the rest,
    ``tau_t' = tau_t * b_t / (1 - p)``, ``b_t ~ Bernoulli(1 - p)`` (seeded per
    ``(seed, task, key)``), then merge the ``tau_t'`` with task arithmetic (``base="ta"``,
    their sum) or TIES (``base="ties"`` with its options ``density``, ``agg``,
    ``topk_count``, ``extra_entries``, ``zero_sign``, see :func:`merging.methods.ties.ties`).
    Unscaled."""
    p = probability("p", p)
    base = choice("base", base, ("ta", "ties"))
    check_ties_options(density, agg, topk_count, extra_entries, zero_sign)
    values = drop_and_rescale(p, int(seed))
    if base == "ties":
        merger = ties_merger(
            tvs, density, agg, values,
            topk_count=topk_count, extra_entries=extra_entries, zero_sign=zero_sign,
        )  # fmt: skip
        return tvs.map(merger)
    return tvs.map(lambda key, taus: summed([values(t, key, x) for t, x in enumerate(taus)]))
