"""Weight averaging (Wortsman et al., "Model soups", ICML 2022)."""

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors, summed


@merge_method(
    "weight_averaging",
    label="Weight averaging",
    reference="Wortsman et al., ICML 2022 (model soups)",
    storage="merged",
)
def weight_averaging(tvs: TaskVectors) -> dict[str, torch.Tensor]:
    """``tau = (1/T) sum_t tau_t``, i.e. task arithmetic with ``alpha = 1/T``;
    ``theta_0 + tau`` is the average of the fine-tuned weights."""
    return tvs.map(lambda key, taus: summed(taus) / len(taus))
