"""MagMax (Marczak et al., "MagMax: Leveraging Model Merging for Seamless Continual
Learning", ECCV 2024)."""

from __future__ import annotations

import torch

from merging.registry import merge_method
from merging.streaming import TaskVectors

Tensor = torch.Tensor


def max_magnitude(taus: list[Tensor]) -> Tensor:
    """Elementwise the entry of largest magnitude among ``taus``, sign included; among equal
    magnitudes the last task's (the authors' ``merge_max_abs`` replaces on ``>=``)."""
    out = taus[0].clone()
    for x in taus[1:]:
        out = torch.where(x.abs() >= out.abs(), x, out)
    return out


@merge_method(
    "magmax",
    label="MagMax",
    reference="Marczak et al., ECCV 2024; danielm1405/magmax",
    storage="merged",
)
def magmax(tvs: TaskVectors) -> dict[str, Tensor]:
    """MagMax: each parameter takes the value of the task vector that changed it most,
    ``tau[i] = tau_{t*}[i]`` with ``t* = argmax_t |tau_t[i]|`` (:func:`max_magnitude`),
    unscaled. The authors apply it with a fixed ``alpha = 0.5`` (``merge_8datasets.py``,
    ``merge_splitted.py``: ``(merge_max_abs, [0.5])``), the value of
    ``conf/method/magmax.yaml``. (The paper's method merges sequentially fine-tuned
    experts; here, as in that script's independent fine-tuning setting, the experts are
    fine-tuned independently from ``theta_0``.)"""
    return tvs.map(lambda key, taus: max_magnitude(taus))
