"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023)."""

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors, summed


@merge_method(
    "task_arithmetic",
    label="Task arithmetic",
    reference="Ilharco et al., ICLR 2023",
    storage="merged",
)
def task_arithmetic(tvs: TaskVectors) -> dict[str, torch.Tensor]:
    """``tau = sum_t tau_t``; the merged model is ``theta_0 + alpha * tau``."""
    return tvs.map(lambda key, taus: summed(taus))
