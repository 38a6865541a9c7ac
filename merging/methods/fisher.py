"""Fisher merging (Matena & Raffel, "Merging Models with Fisher-Weighted Averaging",
NeurIPS 2022)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from torch.func import vjp, vmap

from merging.options import choice, non_negative_int, positive, positive_int
from merging.registry import merge_method
from merging.streaming import TaskVectors
from merging.task_data import TaskData, merged_output, task_vector

Tensor = torch.Tensor
ESTIMATORS = ("exact", "sampled", "fusion_bench")
VJP_FLOATS = 2**28  # gradient entries held at once (1 GiB in float32)


def squared_gradients(
    context: TaskData,
    task: str,
    params: dict[str, Tensor],
    fixed: dict[str, Tensor],
    batch: object,
    estimator: str,
    generator: torch.Generator,
    aliases: Mapping[str, str] | None = None,
) -> tuple[dict[str, Tensor], int]:
    """``sum_j (d <r_j, log p(batch)> / d params)^2`` and the batch's example count, for
    cotangent rows ``r_j`` (each shaped like the (B, C) log-probabilities) chosen by
    ``estimator`` from the predicted probabilities ``p``:

    * ``exact`` (B = 1): ``r_c = sqrt(p_c) e_c`` for every class c, so the sum is
      ``sum_c p_c (d log p_c / d theta)^2``;
    * ``sampled`` (B = 1): one row ``e_y``, ``y ~ p`` (an unbiased one-sample estimate);
    * ``fusion_bench``: one row ``sqrt(p)`` over the whole batch (FusionBench / MergeLM:
      the squared gradient of ``sum_{n,c} sqrt(p_nc) log p_nc``, cross terms included).

    Rows are pulled back in chunks of at most :data:`VJP_FLOATS` gradient entries. Each
    alias key of ``aliases`` (tied parameters) reads its primary's tensor.
    """

    def log_probs(p: dict[str, Tensor]) -> Tensor:
        weights = {**fixed, **p}
        weights.update({alias: weights[primary] for alias, primary in (aliases or {}).items()})
        return torch.log_softmax(context.logits(task, weights, batch), dim=-1)

    out, pullback = vjp(log_probs, params)
    probs = out.detach().exp()
    if estimator == "exact":
        rows = torch.diag_embed(probs.sqrt()).transpose(0, 1)  # (C, 1, C)
    elif estimator == "sampled":
        label = torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
        rows = torch.zeros_like(probs).scatter_(1, label, 1.0)[None]
    else:
        rows = probs.sqrt()[None]
    size = sum(p.numel() for p in params.values())
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    with warnings.catch_warnings():  # functorch's note on batching rules it falls back for
        warnings.filterwarnings("ignore", message="There is a performance drop")
        for part in rows.split(max(1, VJP_FLOATS // max(size, 1))):
            (grads,) = vmap(pullback)(part)
            for key, g in grads.items():
                total[key] += g.square().sum(0)
    return total, probs.shape[0]


def diagonal_fisher(
    context: TaskData,
    task: str,
    params: dict[str, Tensor],
    fixed: dict[str, Tensor],
    examples: int,
    estimator: str,
    batch_size: int,
    generator: torch.Generator,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Tensor]:
    """The diagonal Fisher of the model with weights ``{**fixed, **params}`` on the first
    ``examples`` examples of ``task``, w.r.t. ``params``, under the model's own predictive
    distribution: ``F = (1/N) sum_n sum_c p(c|x_n) (d log p(c|x_n) / d theta)^2``
    (``exact``; :func:`squared_gradients` for the other estimators)."""
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    count = 0
    size = batch_size if estimator == "fusion_bench" else 1
    for batch in context.batches(task, size, examples):
        squares, n = squared_gradients(
            context, task, params, fixed, batch, estimator, generator, aliases
        )
        count += n
        for key, s in squares.items():
            fisher[key] += s
    return {k: f / max(count, 1) for k, f in fisher.items()}


@merge_method(
    "fisher",
    label="Fisher merging",
    reference="Matena & Raffel, NeurIPS 2022; mmatena/model_merging (FusionBench: "
    "tanganke/fusion_bench)",
    storage="merged",
    needs=("data",),
)
def fisher(
    tvs: TaskVectors,
    context: TaskData,
    *,
    examples: int = 256,
    estimator: str = "exact",
    batch_size: int = 32,
    floor: float = 1e-6,
    normalize: bool = True,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Fisher-weighted averaging of the experts: per entry,
    ``tau = sum_t w_t tau_t / sum_t w_t`` with ``w_t = max(F_t, floor) / ||F_t||_2``
    (the same as averaging ``theta_t = theta_0 + tau_t``: the weights sum to one), unscaled
    (the model is ``theta_0 + tau``: alpha 1).

    ``F_t`` is the diagonal Fisher (:func:`diagonal_fisher`) of expert ``t`` on the first
    ``examples`` examples of its own task in ``context`` (the train split), w.r.t. every
    merged float entry. ``normalize`` divides it by its global L2 norm over all entries
    (the authors' ``normalize_fishers``; FusionBench's ``normalize_fisher_weight``), so that
    no expert dominates by the scale of its gradients; ``floor`` (1e-6) keeps every weight
    positive, as the authors' ``fisher_floor`` does (a maximum; FusionBench adds it), here
    for every expert (the authors floor only their first, "target" model).

    ``estimator``: ``exact`` (the authors' expectation over all classes, one backward pass
    per example and class), ``sampled`` (one class drawn per example from the model's
    prediction, ``seed``), ``fusion_bench`` (FusionBench's batched form, ``batch_size``
    examples per backward pass). Memory: one expert, its Fisher and two running sums.
    Raises ``ValueError`` naming the option.
    """
    examples = positive_int("examples", examples)
    batch_size = positive_int("batch_size", batch_size)
    choice("estimator", estimator, ESTIMATORS)
    positive("floor", floor)
    if not isinstance(normalize, bool):
        raise ValueError(f"option 'normalize' must be true or false, got {normalize!r}")
    keys = tvs.float_keys
    context.check(len(tvs), keys, "fisher")
    generator = torch.Generator().manual_seed(non_negative_int("seed", seed))
    num: dict[str, Tensor] = {}
    den: dict[str, Tensor] = {}
    for t, task in enumerate(context.tasks):
        tau = task_vector(tvs, t, context.device)
        weights = context.weights(tau, tvs.aliases)
        params = {k: weights[k].detach() for k in keys}
        fixed = {k: v for k, v in weights.items() if k not in params and k not in tvs.aliases}
        f = diagonal_fisher(
            context, task, params, fixed, examples, estimator, batch_size, generator, tvs.aliases
        )
        norm = math.sqrt(sum(float(x.double().square().sum()) for x in f.values()))
        scale = norm if normalize and norm > 0 else 1.0
        for key in keys:
            w = f[key].clamp_min(floor).div_(scale)
            num[key] = num[key].add_(w * tau[key]) if key in num else w * tau[key]
            den[key] = den[key].add_(w) if key in den else w
    return merged_output(tvs, {key: num[key] / den[key] for key in keys})
