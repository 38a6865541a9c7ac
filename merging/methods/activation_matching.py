"""Activation matching, then averaging (Ainsworth et al., "Git Re-Basin", ICLR 2023, Sec. 3.1;
Li et al., "Convergent Learning", 2016)."""

from __future__ import annotations

import functools

import torch

from merging.alignment import matching, permute_state
from merging.context import ModelContext, State
from merging.methods.direct_average import aligned_average
from merging.registry import merge_method


def align_activations(
    context: ModelContext, reference: State, state: State
) -> dict[str, torch.Tensor]:
    """``state`` permuted so that its features correlate best with ``reference``'s on the
    merge batches (:func:`merging.alignment.activation_matching`)."""
    perms = matching.activation_matching(stats=context.pair_stats(reference, state))
    return permute_state(context.spec, state, perms)


@merge_method(
    "activation_matching",
    kind="models",
    label="Activation matching",
    reference="Ainsworth et al., ICLR 2023 (Git Re-Basin, Sec. 3.1); samuela/git-re-basin",
    storage="merged",
    min_inputs=2,
)
def activation_matching(context: ModelContext) -> dict[str, torch.Tensor]:
    """Models 2..k permuted to model 1, per group maximising ``sum_i corr(f_1_i, f_k_p(i))``
    over the merge batches (linear assignment), then averaged; BatchNorm statistics
    recomputed."""
    return aligned_average(context, functools.partial(align_activations, context))
