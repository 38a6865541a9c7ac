"""RegMean (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models",
ICLR 2023) and RegMean++ (Nguyen et al., "RegMean++: Enhancing Effectiveness and
Generalization of Regression Mean for Model Merging", arXiv 2508.03121, 2025)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from merging.options import number, positive_int
from merging.registry import merge_method
from merging.streaming import TaskVectors
from merging.task_data import TaskData, merged_output, task_vector

Tensor = torch.Tensor
Block = tuple[str, int, int]  # a weight key and the rows [start, stop) one input feeds
Record = Callable[[str, int, int, Tensor], None]


def _attention_hook(prefix: str, record: Record) -> Callable:
    """A forward hook of an ``nn.MultiheadAttention`` (packed projections) that records the
    inputs of its projections: rows ``[0, E)``, ``[E, 2E)``, ``[2E, 3E)`` of
    ``in_proj_weight`` read the query, key and value; ``out_proj.weight`` reads the
    attention's context, obtained by rerunning the attention with an identity output
    projection (torch calls ``out_proj`` functionally, so its own hooks never fire)."""

    def hook(mha: nn.MultiheadAttention, args: tuple, kwargs: dict, output: object) -> None:
        given = inspect.signature(mha.forward).bind(*args, **kwargs).arguments
        q, k, v = given["query"], given["key"], given["value"]
        e = mha.embed_dim
        if q is k and k is v:
            record(prefix + "in_proj_weight", 0, 3 * e, q)
        else:
            for i, x in enumerate((q, k, v)):
                record(prefix + "in_proj_weight", i * e, (i + 1) * e, x)
        if mha.batch_first and q.dim() == 3:
            q, k, v = (x.transpose(0, 1) for x in (q, k, v))
        context, _ = F.multi_head_attention_forward(
            q, k, v, e, mha.num_heads, mha.in_proj_weight, mha.in_proj_bias, mha.bias_k,
            mha.bias_v, mha.add_zero_attn, 0.0, torch.eye(e, device=q.device, dtype=q.dtype),
            None, training=False, key_padding_mask=given.get("key_padding_mask"),
            need_weights=False, attn_mask=given.get("attn_mask"),
            is_causal=given.get("is_causal", False),
        )  # fmt: skip
        record(prefix + "out_proj.weight", 0, e, context)

    return hook


def observe_linear_inputs(
    module: nn.Module, record: Record, keys: Iterable[str]
) -> list[RemovableHandle]:
    """Register forward hooks that call ``record(key, start, stop, x)`` with the input ``x``
    of every linear map of ``module`` whose weight key is in ``keys``: ``nn.Linear``
    layers (weight (out, in): all rows) and the projections of ``nn.MultiheadAttention``
    with packed ``in_proj_weight`` (:func:`_attention_hook`). Returns the handles."""
    keys = set(keys)
    handles, inside_attention = [], set()
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.MultiheadAttention) and sub._qkv_same_embed_dim:
            inside_attention.add(prefix + "out_proj")
            if prefix + "in_proj_weight" in keys:
                hook = _attention_hook(prefix, record)
                handles.append(sub.register_forward_hook(hook, with_kwargs=True))
        elif isinstance(sub, nn.Linear) and name not in inside_attention:
            key = prefix + "weight"
            if key in keys:
                rows = sub.out_features
                handles.append(
                    sub.register_forward_hook(
                        lambda m, args, out, key=key, rows=rows: record(key, 0, rows, args[0])
                    )
                )
    return handles


class _Stop(Exception):
    """Ends a forward pass once the block being merged has run (RegMean++)."""


def gram_matrices(
    context: TaskData,
    weights: dict[str, Tensor],
    task: str,
    keys: Iterable[str],
    examples: int,
    batch_size: int,
    stop_after: str | None = None,
) -> dict[Block, Tensor]:
    """``G = X^T X / n`` per linear input (rows of every example's tokens stacked: n rows)
    of the model with ``weights`` on the first ``examples`` examples of ``task``; the
    forward pass stops after module ``stop_after`` if given."""
    sums: dict[Block, Tensor] = {}
    counts: dict[Block, int] = {}

    def record(key: str, start: int, stop: int, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        block = (key, start, stop)
        gram = x.T @ x
        sums[block] = sums[block].add_(gram) if block in sums else gram
        counts[block] = counts.get(block, 0) + x.shape[0]

    def stop(*args: object) -> None:
        raise _Stop

    handles = observe_linear_inputs(context.module, record, keys)
    if stop_after is not None:
        handles.append(context.module.get_submodule(stop_after).register_forward_hook(stop))
    try:
        with torch.no_grad():
            for batch in context.batches(task, batch_size, examples):
                try:
                    context.forward(weights, batch)
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return {block: s / counts[block] for block, s in sums.items()}


def _accumulate(
    sums: dict[Block, list[Tensor]],
    grams: dict[Block, Tensor],
    tau: dict[str, Tensor],
    off_diagonal: float,
) -> None:
    """Add ``G~_t`` and ``G~_t tau_t[rows]^T`` of one task to ``sums[block]``, with
    ``G~ = off_diagonal * G + (1 - off_diagonal) * diag(G)``."""
    for (key, start, stop), gram in grams.items():
        g = gram * off_diagonal
        g.diagonal().add_(gram.diagonal() * (1 - off_diagonal))
        gw = g @ tau[key][start:stop].T
        if (key, start, stop) in sums:
            sums[key, start, stop][0].add_(g)
            sums[key, start, stop][1].add_(gw)
        else:
            sums[key, start, stop] = [g, gw]


def _solve(sums: dict[Block, list[Tensor]], merged: dict[str, Tensor]) -> None:
    """``merged[key][rows] = ((sum_t G~_t)^-1 sum_t G~_t tau_t[rows]^T)^T`` for every block
    (float64; the pseudo-inverse if the sum is singular, i.e. an input feature that is zero
    on every example: its weights keep ``theta_0``)."""
    for (key, start, stop), (g, gw) in sums.items():
        try:
            solved = torch.linalg.solve(g.double(), gw.double())
        except torch.linalg.LinAlgError:
            solved = torch.linalg.pinv(g.double()) @ gw.double()
        merged[key][start:stop] = solved.T.to(merged[key].dtype)


def _check(
    tvs: TaskVectors,
    context: TaskData,
    name: str,
    examples: int,
    batch_size: int,
    off_diagonal: float,
) -> None:
    """Option ranges (``ValueError`` naming the option) and the data's fit to ``tvs``."""
    positive_int("examples", examples)
    positive_int("batch_size", batch_size)
    if not 0.0 <= number("off_diagonal", off_diagonal) <= 1.0:
        raise ValueError(f"option 'off_diagonal' must be in [0, 1], got {off_diagonal!r}")
    context.check(len(tvs), tvs.float_keys, name)


def _mean_task_vector(tvs: TaskVectors, device: torch.device) -> dict[str, Tensor]:
    """``(1/T) sum_t tau_t`` on every float key, on ``device``."""
    total: dict[str, Tensor] = {}
    for t in range(len(tvs)):
        for key, x in task_vector(tvs, t, device).items():
            total[key] = total[key].add_(x) if key in total else x.clone()
    return {key: x / len(tvs) for key, x in total.items()}


REFERENCE = "Jin et al., ICLR 2023; bloomberg/dataless-model-merging (FusionBench: " \
    "tanganke/fusion_bench)"  # fmt: skip


@merge_method("regmean", label="RegMean", reference=REFERENCE, storage="merged",
              needs=("data",))  # fmt: skip
def regmean(
    tvs: TaskVectors,
    context: TaskData,
    *,
    examples: int = 256,
    batch_size: int = 32,
    off_diagonal: float = 0.95,
) -> dict[str, Tensor]:
    """RegMean: each linear map's weight is the least-squares merge of the experts' on
    their own inputs, ``W = (sum_t G~_t)^-1 sum_t G~_t W_t`` (W as (in, out)); in task
    vectors, ``tau = (sum_t G~_t)^-1 sum_t G~_t tau_t`` (the theta_0 terms cancel), unscaled
    (alpha 1). Every other entry (biases, norms, embeddings, convolutions) is averaged.

    ``G_t = X_t^T X_t / n``: the Gram matrix of the layer's inputs in expert ``t`` on the
    first ``examples`` examples of task ``t`` (train split; tokens as rows, averaged as
    the authors' and FusionBench's code does), its off-diagonal entries scaled by
    ``off_diagonal`` (``G~ = a G + (1 - a) diag(G)``, FusionBench's
    ``reduce_non_diagonal_ratio``, 0.95 for CLIP; 1 is the plain closed form). Linear maps:
    ``nn.Linear`` layers and the packed projections of ``nn.MultiheadAttention``
    (:func:`observe_linear_inputs`; open_clip's attention). Memory: one expert, the
    current task's Gram matrices and two running sums per linear map.
    """
    _check(tvs, context, "regmean", examples, batch_size, off_diagonal)
    keys = tvs.float_keys
    merged = _mean_task_vector(tvs, context.device)
    sums: dict[Block, list[Tensor]] = {}
    for t, task in enumerate(context.tasks):
        tau = task_vector(tvs, t, context.device)
        weights = context.weights(tau, tvs.aliases)
        grams = gram_matrices(context, weights, task, keys, examples, batch_size)
        _accumulate(sums, grams, tau, off_diagonal)
    _solve(sums, merged)
    return merged_output(tvs, merged)


@merge_method(
    "regmean_plusplus",
    label="RegMean++",
    reference="Nguyen et al., arXiv 2508.03121, 2025; nthehai01/RegMean-plusplus "
    "(FusionBench: tanganke/fusion_bench)",
    storage="merged",
    needs=("data",),
)
def regmean_plusplus(
    tvs: TaskVectors,
    context: TaskData,
    *,
    examples: int = 256,
    batch_size: int = 32,
    off_diagonal: float = 0.95,
) -> dict[str, Tensor]:
    """RegMean++: :func:`regmean`'s closed form, block by block (``context.blocks``, in
    forward order), with each block's inputs taken from the merged model: for block l,
    expert ``t``'s Gram matrices are those of the model whose earlier blocks are already
    merged and whose block l is expert ``t``'s, on task ``t``'s examples (RegMean takes them
    from expert ``t`` throughout). Entries outside the blocks (embeddings, final norm,
    projection) are averaged first, so block 0 reads the averaged embedding (as
    FusionBench's CLIP version does). Options and memory as :func:`regmean`; the forward
    pass of block l stops after it (l + 1 blocks of compute per block and task).
    """
    _check(tvs, context, "regmean_plusplus", examples, batch_size, off_diagonal)
    if not context.blocks:
        raise ValueError(
            "merge method 'regmean_plusplus' needs the model's block order, which this "
            "task data does not declare (TaskData.blocks)"
        )
    keys = tvs.float_keys
    merged = _mean_task_vector(tvs, context.device)
    for block in context.blocks:
        inside = [k for k in keys if k.startswith(block + ".")]
        sums: dict[Block, list[Tensor]] = {}
        for t, task in enumerate(context.tasks):
            tau = {k: tvs.task(t, k).to(context.device) for k in inside}
            weights = context.weights({**merged, **tau}, tvs.aliases)
            grams = gram_matrices(context, weights, task, inside, examples, batch_size, block)
            _accumulate(sums, grams, tau, off_diagonal)
        _solve(sums, merged)
    return merged_output(tvs, merged)
