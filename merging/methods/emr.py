"""EMR-Merging (Huang et al., "EMR-Merging: Tuning-Free High-Performance Model Merging",
NeurIPS 2024): Elect a unified task vector, then a Mask and a Rescaler per task."""

import math

import torch

from merging.masks import MaskedVector, PackedMask, pack_mask
from merging.registry import merge_method
from merging.streaming import TaskVectors, masked, summed

Tensor = torch.Tensor


@merge_method(
    "emr",
    label="EMR-Merging",
    reference="Huang et al., NeurIPS 2024; harveyhuang18/EMR_Merging",
    storage="masks_rescalers",
    task_specific=True,
    min_inputs=2,
)
def emr(tvs: TaskVectors) -> list[MaskedVector]:
    """One task vector per task, ``lambda_t * M_t * tau_uni`` (Huang et al.), as the authors'
    ``emr_merge`` (merge_vit/src/main_emr_merging.py) computes it.

    Elect: ``gamma = +1`` where ``sum_t tau_t > 0``, else ``-1`` (a sum of exactly 0 counts
    as negative), ``eps = max_{t: tau_t * gamma > 0} |tau_t|`` elementwise (0 if no task
    agrees), ``tau_uni = gamma * eps``. Mask: ``M_t = (tau_t * gamma > 0)``. Rescale:
    ``lambda_t = sum_p mean|tau_t[p]| / sum_p mean|M_t[p] * tau_uni[p]|``, sums over the
    float parameter tensors ``p`` of a mean over each tensor's entries (so a small tensor
    weighs as much as a large one). Serve task ``t`` with ``theta_0 + lambda_t * M_t *
    tau_uni`` (alpha = 1; the method needs no tuning). A task whose mask is empty everywhere
    gets ``lambda_t = 0`` and a zero task vector (the authors' code divides by 0 there).

    (The paper's Eq. reads ``sign(0) = 0`` and a ratio of global sums; issue 9 adopts the
    authors' code, which produced the published numbers.)

    One streamed pass: ``tau_uni`` is kept once in float32 (every key in one allocation:
    per-key outputs allocated amid each key's temporaries fragmented the heap, 20 ViT-B/32
    task vectors peaked at 1.11-1.40 GiB over five processes, 1.11-1.16 GiB since; the keys
    are views of that one tensor, so ``torch.save`` of one key writes them all: clone a key
    to keep it alone) and each ``M_t`` at 1 bit per weight; a task's key is materialised
    (in the input dtype) when read.
    """
    num_tasks = len(tvs)
    sizes = {key: math.prod(tvs.meta(key)[0]) for key in tvs.float_keys}
    arena, offset = torch.empty(sum(sizes.values())), 0  # every key's tau_uni, one allocation
    total = torch.zeros(num_tasks, dtype=torch.float64, device=tvs.device)
    kept = torch.zeros_like(total)
    shared: dict[str, Tensor] = {}
    packed: list[dict[str, PackedMask]] = [{} for _ in range(num_tasks)]
    dtypes: dict[str, torch.dtype] = {}
    for key in tvs.keys:
        if not tvs.is_float(key):
            shared[key] = tvs.raw(0, key)
            continue
        taus = tvs.tensors(key)
        gamma = (summed(taus) > 0).float().mul_(2).sub_(1)  # +1 where the sum is > 0, else -1
        eps = torch.zeros_like(taus[0])
        buffer, product = torch.empty_like(eps), torch.empty_like(eps)
        masks = []
        for t, x in enumerate(taus):
            m = torch.mul(x, gamma, out=buffer) > 0
            masks.append(m)
            magnitude = torch.abs(x, out=buffer)
            if x.numel():
                total[t] += magnitude.mean(dtype=torch.float64)
            torch.maximum(eps, masked(magnitude, m, product), out=eps)  # |x| >= 0: times 0 is +0.0
        for t, m in enumerate(masks):
            if m.numel():
                kept[t] += masked(eps, m, buffer).mean(dtype=torch.float64)
            packed[t][key] = pack_mask(m, key)
        out = arena[offset : offset + sizes[key]].view(eps.shape)
        offset += sizes[key]
        shared[key] = out.copy_(eps.mul_(gamma))
        dtypes[key] = tvs.meta(key)[1]
    rescalers = torch.where(kept > 0, total / kept, 0.0).float().tolist()
    return [
        MaskedVector(shared, p, scale=lam, dtypes=dtypes)
        for p, lam in zip(packed, rescalers, strict=True)
    ]
