"""WUDI-Merging (Cheng et al., "Whoever Started the Interference Should End It: Guiding
Data-Free Model Merging via Task Vectors", ICML 2025)."""

from __future__ import annotations

import torch

from merging.options import choice, non_negative_int, positive
from merging.registry import merge_method
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor
OTHERS = ("mean", "zero")


def wudi_matrix(taus: list[Tensor], steps: int, lr: float) -> Tensor:
    """Minimise ``L(tau) = sum_t ||(tau - tau_t) tau_t^T||_F^2 / ||tau_t||_F^2`` over
    ``tau`` (shape (out, in)) by ``steps`` steps of Adam (``lr``, betas (0.9, 0.999),
    eps 1e-8) from ``tau = sum_t tau_t``.

    The gradient ``2 sum_t (tau - tau_t) G_t``, ``G_t = tau_t^T tau_t / ||tau_t||_F^2``,
    is formed from ``A = sum_t G_t`` (in x in) and ``B = sum_t tau_t G_t`` once, so a step
    costs one (out x in) @ (in x in) product instead of T products of (out x out) matrices.
    A task whose matrix is zero adds nothing (its term is 0 / 0 in the loss).
    """
    cols = taus[0].shape[1]
    a = torch.zeros(cols, cols, dtype=taus[0].dtype, device=taus[0].device)
    b = torch.zeros_like(taus[0])
    for x in taus:
        norm = (x * x).sum()
        if norm > 0:
            gram = (x.T @ x).div_(norm)
            a += gram
            b += x @ gram
    merged = torch.nn.Parameter(summed(taus))
    optimizer = torch.optim.Adam([merged], lr=lr)
    with torch.no_grad():
        for _ in range(steps):
            merged.grad = (merged @ a).sub_(b).mul_(2)
            optimizer.step()
    return merged.detach()


@merge_method(
    "wudi",
    label="WUDI-Merging",
    reference="Cheng et al., ICML 2025; nathanielyvo/WUDI-Merging",
    storage="merged",
)
def wudi(
    tvs: TaskVectors, *, steps: int = 300, lr: float = 1e-5, others: str = "mean"
) -> dict[str, Tensor]:
    """WUDI-Merging: every matrix (2-D float entry, the linear layers) is merged by
    :func:`wudi_matrix`, the task vectors spanning (approximately) their layer's inputs
    so that ``(tau - tau_t) tau_t^T`` measures the interference on task ``t``'s inputs;
    the other entries are averaged (``others="mean"``, FusionBench's ``wudi_merging``) or
    left at ``theta_0`` (``"zero"``). The model is ``theta_0 + tau`` (no scaling:
    ``alpha = 1``, as the authors apply it).

    The authors' ViT code (``vit/wudi_main.py``) runs Adam at lr 1e-5 for 300 steps (their
    ``--iter`` default; FusionBench's config uses 400) and merges only the attention and
    MLP weights of each block (``attn.in_proj_weight``, ``attn.out_proj.weight``,
    ``mlp.c_fc.weight``, ``mlp.c_proj.weight``), leaving every other entry at
    ``theta_0``; here every 2-D entry is a linear layer's (CLIP's 2-D ``proj`` and
    ``positional_embedding`` included), see ``results/fidelity.md``. Raises
    ``ValueError`` naming the option (``steps`` a non-negative integer, ``lr > 0``).
    """
    steps = non_negative_int("steps", steps)
    positive("lr", lr)
    choice("others", others, OTHERS)

    def merge_key(key: str, taus: list[Tensor]) -> Tensor:
        if taus[0].ndim == 2:
            return wudi_matrix(taus, steps, float(lr))
        if others == "zero":
            return torch.zeros_like(taus[0])
        return summed(taus).div_(len(taus))

    return tvs.map(merge_key)
