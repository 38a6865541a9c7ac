"""Individual fine-tuned experts: task ``t`` is served by ``theta_0 + tau_t``."""

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors


@merge_method(
    "finetuned",
    label="Fine-tuned",
    reference="Ilharco et al., ICLR 2023 (the individual experts)",
    storage="experts",
    task_specific=True,
)
def finetuned(tvs: TaskVectors) -> list[dict[str, torch.Tensor]]:
    """One model per task, ``theta_t = theta_0 + tau_t`` (the upper reference)."""
    return tvs.map_each(lambda key, taus: taus)
