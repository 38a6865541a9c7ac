"""AdaMerging (Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning",
ICLR 2024): the coefficients of task arithmetic, one per task (task-wise) or per task and
parameter tensor (layer-wise), learned by minimising the prediction entropy on unlabelled
test inputs (test-time adaptation). One method, ``granularity`` picks the variant; the
configs ``adamerging_taskwise`` and ``adamerging_layerwise`` set it."""

from __future__ import annotations

import torch

from merging.options import choice, non_negative_int, number, positive, positive_int
from merging.registry import merge_method
from merging.streaming import TaskVectors
from merging.task_data import TaskData, merged_output

Tensor = torch.Tensor
GRANULARITIES = ("task", "layer")


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy of the predictions, ``-(1/B) sum_n sum_c p_nc log p_nc``."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def learn_coefficients(
    tvs: TaskVectors,
    context: TaskData,
    granularity: str,
    steps: int,
    lr: float,
    init: float,
    batch_size: int,
    clamp: bool,
    examples: int | None,
    seed: int,
) -> tuple[dict[str, Tensor], Tensor, list[float]]:
    """Learn coefficients ``lam`` of ``theta(lam) = theta_0 + sum_t lam_t tau_t`` (one per
    task with ``granularity="task"``, one per task and entry with ``"layer"``) by Adam on
    the summed per-task entropy ``L = sum_t H(model(theta(lam)), batch_t)`` of
    ``batch_size`` inputs drawn per task and step from the first ``examples`` of
    ``context`` (all if ``None``); ``clamp`` bounds them to [0, 1] in the forward pass (the
    authors' code). Returns the merged task vector ``sum_t lam_t tau_t`` (unscaled), ``lam``
    (entries x tasks; 1 x tasks task-wise) and the loss of every step.

    The authors' code (``src/main_{task,layer}_wise_adamerging.py``): 500 Adam steps at lr
    1e-3 (betas 0.9, 0.999) from 0.3, coefficients clamped to [0, 1]; per step and task two
    batches of 16 test inputs from a reshuffled test loader, each batch's mean entropy
    summed over batches and tasks (here one batch of 32 per task: the same loss up to a
    factor 2, to which Adam is invariant). FusionBench's CLIP config: 1000 steps, batch 16,
    no clamping. Cost: ``steps * T`` forward and backward passes of a batch; memory: every
    task vector on ``context.device`` (T models) plus one task's batch of activations
    (tasks are back-propagated one at a time). Raises ``ValueError`` naming the option.
    """
    layerwise = choice("granularity", granularity, GRANULARITIES) == "layer"
    steps = non_negative_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    positive("lr", lr)
    number("init", init)
    if examples is not None:
        positive_int("examples", examples)
    if not isinstance(clamp, bool):
        raise ValueError(f"option 'clamp' must be true or false, got {clamp!r}")
    keys = tvs.float_keys
    context.check(len(tvs), keys, "adamerging")
    device = context.device
    stacks = {k: torch.stack([x.to(device) for x in tvs.tensors(k)]) for k in keys}  # (T, ...)
    raw = torch.full((len(keys) if layerwise else 1, len(tvs)), float(init), device=device)
    raw.requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=float(lr), betas=(0.9, 0.999), weight_decay=0.0)
    generator = torch.Generator().manual_seed(non_negative_int("seed", seed))

    def merged(lam: Tensor) -> dict[str, Tensor]:
        return {
            k: torch.tensordot(lam[i if layerwise else 0], stacks[k], dims=1)
            for i, k in enumerate(keys)
        }

    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        lam = raw.clamp(0.0, 1.0) if clamp else raw
        weights = context.weights(merged(lam), tvs.aliases)
        total = 0.0
        for task in context.tasks:
            batch = context.sample(task, batch_size, generator, examples)
            loss = entropy(context.logits(task, weights, batch))
            loss.backward(retain_graph=True)
            total += float(loss.detach())
        optimizer.step()
        losses.append(total)
    with torch.no_grad():
        lam = raw.clamp(0.0, 1.0) if clamp else raw.detach()
        return merged_output(tvs, merged(lam)), lam.detach().cpu(), losses


@merge_method(
    "adamerging",
    label="AdaMerging (TTA)",
    reference="Yang et al., ICLR 2024; EnnengYang/AdaMerging (FusionBench: tanganke/fusion_bench)",
    storage="merged",
    needs=("data", "test_inputs"),
)
def adamerging(
    tvs: TaskVectors,
    context: TaskData,
    *,
    granularity: str = "layer",
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    batch_size: int = 32,
    clamp: bool = True,
    examples: int | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """AdaMerging: ``tau[k] = sum_t lam_{k,t} tau_t[k]`` with coefficients learned on
    unlabelled test inputs of every task (:func:`learn_coefficients`, defaults of the
    authors' code); unscaled (alpha 1). ``granularity="layer"`` (the paper's main method):
    one coefficient per task and merged entry ``k`` (every parameter tensor, as the
    authors' code); ``"task"``: one per task, the same for every ``k``. A test-time
    adaptation method: ``needs`` holds ``test_inputs``, so the pipeline gives it the test
    split and marks its rows. Raises ``ValueError`` naming the option."""
    out, _, _ = learn_coefficients(
        tvs, context, granularity, steps, lr, init, batch_size, clamp, examples, seed
    )
    return out
