"""NP Merge (Orozco Camacho, Horoi, Wolf, Belilovsky, arXiv 2412.15467).

Learned per-parameter interpolation between two aligned endpoints,
``W = sigmoid(a) * W_A + (1 - sigmoid(a)) * W_B``, one coefficient ``a`` per entry, both
endpoints frozen and ``a`` trained by gradient descent on a small amount of data.

>>> merged, alphas = np_merge_pair(model, state_a, aligned_b, batches, steps=160)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from merging.batchnorm import Batches, batchnorm_train_mode
from merging.context import ModelContext
from merging.methods.activation_matching import align_activations
from merging.methods.weight_matching import align_weights
from merging.options import choice, non_negative, number, positive, positive_int
from merging.registry import merge_method, method_spec

State = Mapping[str, torch.Tensor]
OPTIMIZERS = ("adam", "adamw", "sgd")
ALIGNMENTS: dict[str, Callable[..., dict[str, torch.Tensor]] | None] = {
    "weight_matching": align_weights,
    "activation_matching": align_activations,
    "none": None,
}


def _cycle(batches: Batches) -> Iterator:
    """Items of ``batches`` forever: a callable is called again, an iterable re-iterated."""
    while True:
        empty = True
        for item in batches() if callable(batches) else batches:
            empty = False
            yield item
        if empty:
            raise ValueError(
                "NP Merge: `batches` yielded no data (a generator runs only once; pass a "
                "callable returning an iterable, or a re-iterable such as a list or DataLoader)"
            )


def _check_states(model: nn.Module, state_a: State, state_b: State) -> list[str]:
    """The learned keys (the model's float parameters); both states must cover the model."""
    expected = model.state_dict()
    if set(state_a) != set(state_b):
        raise KeyError(f"states A and B differ in keys: {sorted(set(state_a) ^ set(state_b))[:5]}")
    for name, state in (("A", state_a), ("B", state_b)):
        missing = [k for k in expected if k not in state]
        if missing:
            raise KeyError(f"state {name} lacks the model's entries {missing[:5]}")
        for k, ref in expected.items():
            if state[k].shape != ref.shape:
                raise ValueError(
                    f"{k!r} has shape {tuple(state[k].shape)} in state {name}, "
                    f"the model expects {tuple(ref.shape)}"
                )
    return [k for k, p in model.named_parameters() if p.is_floating_point()]


def np_merge_pair(
    model: nn.Module,
    state_a: State,
    state_b: State,
    batches: Batches,
    *,
    steps: int,
    lr: float = 1e-2,
    optimizer: str = "adam",
    init: float = 0.0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    weight_decay: float = 0.0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Learn ``alpha = sigmoid(a)`` per parameter entry; return ``(merged_state, alphas)``.

    ``model`` gives the architecture: it runs through ``torch.func.functional_call`` on
    ``W(a) = W_B + sigmoid(a) * (W_A - W_B)`` with the endpoints frozen (no gradient), so only
    ``a`` is updated; the model's own tensors are neither read nor changed. ``state_b`` must
    already be aligned to ``state_a``. ``batches`` yields ``(x, y)``; a callable is called once
    per pass, an iterable re-iterated, until ``steps`` optimiser steps of ``loss(model(x), y)``
    are done. ``progress(step, loss)`` is called after each step.
    Buffers: during the optimisation BatchNorm layers use batch statistics (train mode; other
    modules in eval mode), running on a copy of the endpoints' averaged buffers. The returned
    state carries that average as a placeholder: reset it with
    ``merging.batchnorm.reset_batchnorm``. Non-float entries are A's.
    Defaults (the paper's exact settings are not available, so these are choices):
    ``init=0`` starts at the plain average of the aligned models (alpha = 0.5), the baseline
    NP Merge improves on; Adam, because gradients of different entries differ by orders of
    magnitude and Adam's per-entry step sizes equalise them; ``lr=1e-2`` on the logits moves
    alpha from 0.5 to about 0.1 / 0.9 within a few hundred steps, i.e. a few epochs on a small
    training subset, as in the paper's protocol; no weight decay (a positive value pulls ``a``
    back towards 0, i.e. towards averaging). ``alphas`` are ``sigmoid(a)``, parameter-shaped.
    """
    positive_int("steps", steps)
    _check_optimiser(lr, weight_decay, optimizer, init)
    keys = _check_states(model, state_a, state_b)
    device = torch.device(device)
    base = {k: state_b[k].detach().to(device) for k in keys}
    delta = {k: state_a[k].detach().to(device) - base[k] for k in keys}
    logits = {k: torch.full_like(base[k], float(init), requires_grad=True) for k in keys}
    others = {k: _average(state_a[k], state_b[k]) for k in state_a if k not in logits}
    model_keys = set(model.state_dict())
    buffers = {k: v.to(device).clone() for k, v in others.items() if k in model_keys}
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    opt = opt_cls[optimizer](list(logits.values()), lr=lr, weight_decay=weight_decay)
    data = _cycle(batches)
    with batchnorm_train_mode(model):
        for step in range(int(steps)):
            x, y = next(data)[:2]
            weights = {k: base[k] + torch.sigmoid(a) * delta[k] for k, a in logits.items()}
            value = loss(
                functional_call(model, {**weights, **buffers}, (x.to(device),)), y.to(device)
            )
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if progress is not None:
                progress(step, value.item())
    with torch.no_grad():
        alphas = {k: torch.sigmoid(a).to(state_a[k].device) for k, a in logits.items()}
        merged = dict(others)
        for k in keys:
            w = base[k] + torch.sigmoid(logits[k]) * delta[k]
            merged[k] = w.to(state_a[k].device, state_a[k].dtype)
    return {k: merged[k] for k in state_a}, alphas


def _average(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a + b.to(a.device)) / 2 if a.is_floating_point() else a.clone()


def np_merge_many(
    model: nn.Module,
    states: Sequence[State],
    batches: Batches,
    *,
    align: Callable[[State, State], State] | None = None,
    order: Sequence[int] | None = None,
    init: float | None = None,
    reset: Callable[[State], dict[str, torch.Tensor]] | None = None,
    **kwargs,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Merge several models by successive pairwise NP Merges, in ``order`` (default 0..T-1).

    ``m = states[order[0]]``; for each next ``s``: ``m = np_merge_pair(model, m, align(m, s))``
    (``align(reference, state)`` returns ``state`` aligned to ``reference``, e.g. weight
    matching then ``permute_state``; None = no alignment). Unless ``init`` is given, the k-th
    merge starts at ``a = log k`` (alpha = k / (k + 1) on the running merge), i.e. at the
    uniform average of the k + 1 models rather than over-weighting the last one. Every
    intermediate merge (before the next model is aligned to it) and the final one go through
    ``reset(state)`` (e.g. a BatchNorm reset, ``merging.batchnorm.recompute_batchnorm_state``;
    None: the averaged placeholders are kept). ``kwargs`` go to ``np_merge_pair``. Returns the
    merged state and the alphas of each pairwise merge.
    """
    order = list(range(len(states))) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(len(states))) or len(order) < 2:
        raise ValueError(
            f"option 'order' must be a permutation of 0..{len(states) - 1} (at least 2 models), "
            f"got {order}"
        )
    merged = dict(states[order[0]])
    history = []
    for k, idx in enumerate(order[1:], start=1):
        other = states[idx] if align is None else align(merged, states[idx])
        start = math.log(k) if init is None else init
        merged, alphas = np_merge_pair(model, merged, other, batches, init=start, **kwargs)
        if reset is not None:
            merged = reset(merged)
        history.append(alphas)
    return merged, history


def _check_optimiser(lr: float, weight_decay: float, optimizer: str, init: float | None) -> None:
    """Raise ``ValueError`` naming the option unless ``lr`` is a finite positive number,
    ``weight_decay`` a finite non-negative one, ``optimizer`` one of :data:`OPTIMIZERS` and
    ``init`` None or a finite number (an infinite ``lr`` or ``weight_decay``, or a NaN
    ``init``, turns every coefficient into NaN: a NaN model scored at chance)."""
    positive("lr", lr)
    non_negative("weight_decay", weight_decay)
    choice("optimizer", optimizer, OPTIMIZERS)
    if init is not None:
        number("init", init)


def merge_order(order: Sequence[int] | None, k: int) -> list[int]:
    """The merge order of the first ``k`` models: ``order`` (model indices, each once) with the
    indices ``>= k`` left out; ``None``: ``0..k-1``. Raises ``ValueError`` naming ``order``."""
    if order is None:
        return list(range(k))
    ok = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in order)
    sequence = [i for i in order if ok and i < k]
    if not ok or len(set(order)) != len(order) or sorted(sequence) != list(range(k)):
        raise ValueError(
            f"option 'order' must list each model index once (at least 0..{k - 1}), got "
            f"{list(order)}"
        )
    return sequence


@merge_method(
    "np_merge",
    kind="models",
    label="NP Merge",
    reference="Orozco Camacho, Horoi, Wolf, Belilovsky, arXiv 2412.15467",
    storage="merged",
    min_inputs=2,
)
def np_merge(
    context: ModelContext,
    *,
    alignment: str = "weight_matching",
    alignment_options: Mapping[str, Any] | None = None,
    samples: int = 1000,
    batch_size: int = 64,
    epochs: int = 10,
    lr: float = 1e-2,
    optimizer: str = "adam",
    init: float | None = None,
    weight_decay: float = 0.0,
    order: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """NP Merge of the context's models, learned on ``samples`` training examples
    (``context.train_batches``: ``epochs`` passes of ``batch_size``, reshuffled per pass).

    Each model is aligned to the running merge by ``alignment`` (``weight_matching``,
    ``activation_matching`` with the options of that method in ``alignment_options``, or
    ``none``); k > 2 models by successive pairwise merges in ``order`` (model indices, those
    ``>= k`` left out; default ascending), each starting at the uniform average unless
    ``init`` (the logit ``a`` at the start) is given (:func:`np_merge_many`). Every pairwise
    merge, intermediate and final, goes through ``context.reset_batchnorm``, the BatchNorm
    reset of every other method. ``lr``, ``optimizer``, ``weight_decay``: the optimiser of
    the coefficients (:func:`np_merge_pair`).
    """
    choice("alignment", alignment, tuple(ALIGNMENTS))
    alignment_options = dict(alignment_options or {})
    if ALIGNMENTS[alignment] is None and alignment_options:
        raise ValueError("option 'alignment_options' must be empty with alignment 'none'")
    if ALIGNMENTS[alignment] is not None:
        try:
            method_spec(alignment).check_options(alignment_options, "alignment_options")
        except TypeError as err:
            raise ValueError(str(err)) from None
    for name, value in (("samples", samples), ("batch_size", batch_size), ("epochs", epochs)):
        positive_int(name, value)
    _check_optimiser(lr, weight_decay, optimizer, init)
    sequence = merge_order(order, len(context.states))
    data, per_epoch = context.training_data(samples, batch_size)
    align = ALIGNMENTS[alignment]
    merged, _ = np_merge_many(
        context.template, context.states, data,
        align=None if align is None else functools.partial(align, context, **alignment_options),
        order=sequence, init=init, reset=context.reset_batchnorm, steps=epochs * per_epoch, lr=lr,
        optimizer=optimizer, weight_decay=weight_decay, device=context.device,
    )  # fmt: skip
    return merged
