"""Averaging the weights of models trained from different initialisations, with or without
aligning them first; BatchNorm statistics recomputed after merging (Jordan et al., REPAIR,
ICLR 2023)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from merging.context import ModelContext, State
from merging.registry import merge_method

Align = Callable[[State, State], State]


def average_states(states: Sequence[State]) -> dict[str, torch.Tensor]:
    """``theta = (1/k) sum_i theta_i`` per floating-point entry; other entries (BatchNorm
    ``num_batches_tracked``) are the first state's."""
    return {
        k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def aligned_average(context: ModelContext, align: Align | None = None) -> dict[str, torch.Tensor]:
    """Models 2..k aligned to model 1 by ``align(reference, state)`` (None: as they are),
    averaged, and passed through ``context.reset_batchnorm``."""
    reference, *others = context.states
    aligned = others if align is None else [align(reference, state) for state in others]
    return context.reset_batchnorm(average_states([reference, *aligned]))


@merge_method(
    "direct_average",
    kind="models",
    label="Direct averaging",
    reference="weight averaging without alignment (Ainsworth et al., ICLR 2023, baseline)",
    storage="merged",
    min_inputs=2,
)
def direct_average(context: ModelContext) -> dict[str, torch.Tensor]:
    """``theta = (1/k) sum_i theta_i`` without alignment, BatchNorm statistics recomputed."""
    return aligned_average(context)
