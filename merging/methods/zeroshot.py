"""Zero-shot: the pretrained model itself, ``tau = 0``."""

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors


@merge_method(
    "zeroshot",
    label="Zero-shot",
    reference="Radford et al., ICML 2021 (the pretrained model)",
    storage="merged",
)
def zeroshot(tvs: TaskVectors) -> dict[str, torch.Tensor]:
    """``tau = 0``: every task is served by ``theta_0``."""
    return tvs.map(lambda key, taus: torch.zeros_like(taus[0]))
