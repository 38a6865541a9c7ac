"""EMR-Merging (Huang et al., "EMR-Merging: Tuning-Free High-Performance Model Merging",
NeurIPS 2024): Elect a unified task vector, then a Mask and a Rescaler per task."""

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors

Tensor = torch.Tensor


def _elect(stacked: Tensor) -> tuple[Tensor, Tensor]:
    """``tau_uni`` and the masks ``M_t`` of one key, from its ``(T, ...)`` task tensors."""
    sign = torch.sign(stacked.sum(0))
    masks = stacked * sign > 0
    tau_uni = sign * torch.where(masks, stacked.abs(), 0.0).amax(0)
    return tau_uni, masks


@merge_method(
    "emr",
    label="EMR-Merging",
    reference="Huang et al., NeurIPS 2024; harveyhuang18/EMR_Merging",
    storage="masks_rescalers",
    task_specific=True,
    min_inputs=2,
)
def emr(tvs: TaskVectors) -> list[dict[str, Tensor]]:
    """One task vector per task, ``lambda_t * M_t * tau_uni`` (Huang et al.).

    Elect: ``gamma = sign(sum_t tau_t)``, ``eps = max_{t: tau_t * gamma > 0} |tau_t|``
    elementwise, ``tau_uni = gamma * eps``. Mask: ``M_t = (tau_t * tau_uni > 0)``.
    Rescale: ``lambda_t = sum |tau_t| / sum |M_t * tau_uni|``, both sums over every float
    parameter of task ``t`` (a streamed pre-pass). Serve task ``t`` with
    ``theta_0 + lambda_t * M_t * tau_uni`` (alpha = 1; the method needs no tuning).

    Follows the paper's formulas: where ``sum_t tau_t = 0`` the elected sign is 0, so
    ``tau_uni = 0`` there, and the rescaler uses global sums. (The authors' code counts
    a zero sum as negative and sums per-parameter-tensor means instead.) A task whose
    mask is empty everywhere gets ``lambda_t = 0`` and a zero task vector.
    """
    total = torch.zeros(len(tvs), dtype=torch.float64, device=tvs.device)
    kept = torch.zeros_like(total)
    for key in tvs.float_keys:
        stacked = torch.stack(tvs.tensors(key))
        tau_uni, masks = _elect(stacked)
        flat = stacked.reshape(len(tvs), -1)
        total += flat.abs().sum(1, dtype=torch.float64)
        kept += (masks * tau_uni.abs()).reshape(len(tvs), -1).sum(1, dtype=torch.float64)
    rescalers = torch.where(kept > 0, total / kept, 0.0).float()

    def rebuild(key: str, taus: list[Tensor]) -> list[Tensor]:
        tau_uni, masks = _elect(torch.stack(taus))
        return [lam * mask * tau_uni for lam, mask in zip(rescalers, masks, strict=True)]

    return tvs.map_each(rebuild)
