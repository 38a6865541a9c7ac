"""Weight matching, then averaging (Ainsworth et al., "Git Re-Basin: Merging Models modulo
Permutation Symmetries", ICLR 2023, Algorithm 1)."""

from __future__ import annotations

import functools

import torch

from merging.alignment import matching, permute_state
from merging.context import ModelContext, State
from merging.methods.direct_average import aligned_average
from merging.registry import merge_method


def align_weights(
    context: ModelContext, reference: State, state: State, *, max_iter: int = 100, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``state`` permuted to match ``reference`` by weight matching
    (:func:`merging.alignment.weight_matching`)."""
    perms = matching.weight_matching(context.spec, reference, state, max_iter=max_iter, seed=seed)
    return permute_state(context.spec, state, perms)


@merge_method(
    "weight_matching",
    kind="models",
    label="Weight matching",
    reference="Ainsworth et al., ICLR 2023 (Git Re-Basin, Alg. 1); samuela/git-re-basin",
    storage="merged",
    min_inputs=2,
)
def weight_matching(
    context: ModelContext, *, max_iter: int = 100, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Models 2..k permuted to model 1 by weight matching, ``max_P sum_key <W_1, P(W_i)>``
    over the learned weights (BatchNorm running statistics are permuted, not scored), by
    coordinate descent over the permutation groups in an order drawn from ``seed``, at most
    ``max_iter`` sweeps; then averaged, BatchNorm statistics recomputed."""
    align = functools.partial(align_weights, context, max_iter=max_iter, seed=seed)
    return aligned_average(context, align)
