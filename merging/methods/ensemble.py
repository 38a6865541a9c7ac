"""The output ensemble: the upper reference of merging models trained from different
initialisations (Ainsworth et al., ICLR 2023; Orozco Camacho et al., 2024), at the cost of
one forward pass per model."""

from __future__ import annotations

import torch
from torch import nn

from merging.context import ModelContext
from merging.registry import merge_method


class Ensemble(nn.Module):
    """``logits(x) = (1/k) sum_i f_i(x)`` over the member networks."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


@merge_method(
    "ensemble",
    kind="models",
    label="Ensemble",
    reference="output ensemble (Ainsworth et al., ICLR 2023; Orozco Camacho et al., 2024)",
    storage="experts",
    min_inputs=2,
)
def ensemble(context: ModelContext) -> Ensemble:
    """The mean of the models' logits: a module, not a single set of weights (it stores and
    runs all ``k`` models)."""
    return Ensemble([context.network(state) for state in context.states])
