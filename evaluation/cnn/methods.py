"""The methods of the different-initialisation regime, run on a CNN zoo.

Every method takes a :class:`Merger` (zoo, data, device) and the indices of the base models
it combines, and returns ``[(extra hyperparameters, test logits), ...]``. Merged models get
their BatchNorm statistics recomputed on the merge data before evaluation (Jordan et al.,
REPAIR, ICLR 2023), as in Git Re-Basin, ZipIt!, CCA Merge and NP Merge.

* ``base_models``: each base model on its own.
* ``ensemble``: the mean of the models' logits, the upper reference (one forward per model).
* ``direct_average``: ``theta = mean_i theta_i`` without alignment.
* ``aligned_average``: every model aligned to the first (weight matching or activation
  matching, Ainsworth et al., ICLR 2023) and averaged; ``zipit`` (Stoica et al., ICLR 2024) and
  ``cca`` (Horoi et al., ICML 2024) merge two models through their own feature maps.
* ``np_merge``: after alignment, ``W = sigmoid(a) W_A + (1 - sigmoid(a)) W_B`` with one
  learned ``a`` per parameter (Orozco Camacho et al., 2024); more than two models by
  successive pairwise merges in a configurable order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from evaluation.cnn.data import ImageData, batches, sample_indices
from evaluation.cnn.train import test_logits
from evaluation.cnn.zoo import CnnZoo
from merging.alignment import (
    PairStats,
    PermutationSpec,
    activation_matching,
    cca_merge,
    permute_state,
    weight_matching,
    zipit,
)
from merging.np_merge import OPTIMIZERS, np_merge_many, recompute_batchnorm_state

State = dict[str, torch.Tensor]
Result = list[tuple[dict[str, Any], torch.Tensor]]
PERMUTATIONS = ("weight_matching", "activation_matching")
ALIGNMENTS = (*PERMUTATIONS, "zipit", "cca")
PAIRWISE = ("zipit", "cca")


class Merger:
    """A zoo with the data its data-driven steps use: ``merge_samples`` training images
    (seed ``seed``) for BatchNorm resets and activation statistics."""

    def __init__(
        self, zoo: CnnZoo, data: ImageData, *, merge_samples: int, batch_size: int,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        self.zoo, self.data, self.device, self.seed = zoo, data, torch.device(device), seed
        self.batch_size = batch_size
        self.merge_indices = sample_indices(len(data.train_y), merge_samples, seed)
        self.template = zoo.model().to(self.device)
        self.spec = PermutationSpec(self.template.permutation_axes())
        self.points: dict[str, list[str]] = self.template.activation_points()

    def merge_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(self.data, "train", self.merge_indices, self.batch_size)

    def net(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        return self.zoo.model(state).to(self.device)

    def logits(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return test_logits(self.net(state), self.data, self.device)

    def reset_batchnorm(self, state: Mapping[str, torch.Tensor]) -> State:
        return recompute_batchnorm_state(self.template, state, self.merge_batches)

    @torch.no_grad()
    def pair_stats(self, state_a: State, state_b: State) -> dict[str, PairStats]:
        """Moments of both models' features per group, over every activation point of the
        group (e.g. all blocks writing to one residual stream) and every position."""
        nets = [self.net(state_a), self.net(state_b)]
        seen: list[dict[str, torch.Tensor]] = [{}, {}]
        hooks = []
        for net, store in zip(nets, seen, strict=True):
            modules = dict(net.named_modules())
            for name in {n for names in self.points.values() for n in names}:
                hooks.append(modules[name].register_forward_hook(_keep(store, name)))
        stats = {g: PairStats() for g in self.points}
        try:
            for x, _ in self.merge_batches():
                for net in nets:
                    net(x.to(self.device))
                for group, names in self.points.items():
                    for name in names:
                        stats[group].update(seen[0][name], seen[1][name])
        finally:
            for hook in hooks:
                hook.remove()
        return stats

    def align(
        self, reference: State, state: State, alignment: str, options: Mapping[str, Any]
    ) -> State:
        """``state`` permuted to match ``reference`` (weight or activation matching)."""
        if alignment == "weight_matching":
            perms = weight_matching(self.spec, reference, state, **options)
        else:
            perms = activation_matching(stats=self.pair_stats(reference, state), **options)
        return permute_state(self.spec, state, perms)


def _keep(store: dict[str, torch.Tensor], name: str) -> Callable:
    """A forward hook storing the module's output as rows (N * positions, channels)."""

    def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        store[name] = out.movedim(1, -1).flatten(0, -2)

    return hook


def _average(states: Sequence[Mapping[str, torch.Tensor]]) -> State:
    return {
        k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def base_models(m: Merger, models: Sequence[int]) -> Result:
    """Each base model's own accuracy."""
    return [({"model": i}, m.logits(m.zoo.states[i])) for i in models]


def ensemble(m: Merger, models: Sequence[int]) -> Result:
    """``logits = mean_i logits_i``: the output ensemble, not a single model."""
    return [({}, torch.stack([m.logits(m.zoo.states[i]) for i in models]).mean(0))]


def direct_average(m: Merger, models: Sequence[int]) -> Result:
    """``theta = mean_i theta_i``, BatchNorm statistics recomputed."""
    return [({}, m.logits(m.reset_batchnorm(_average([m.zoo.states[i] for i in models]))))]


def aligned_average(
    m: Merger, models: Sequence[int], *, alignment: str = "weight_matching",
    options: Mapping[str, Any] | None = None,
) -> Result:  # fmt: skip
    """Permutation alignments: models 2..k permuted to model 1, then averaged. ``zipit`` and
    ``cca``: the two models merged by their feature maps. ``options`` go to the alignment."""
    options = dict(options or {})
    states = [m.zoo.states[i] for i in models]
    if alignment in PAIRWISE:
        fn = zipit if alignment == "zipit" else cca_merge
        stats = m.pair_stats(states[0], states[1])
        merged = fn(m.spec, states[0], states[1], stats=stats, **options)
    else:
        merged = _average(
            [states[0], *(m.align(states[0], s, alignment, options) for s in states[1:])]
        )
    return [({}, m.logits(m.reset_batchnorm(merged)))]


def np_merge(
    m: Merger, models: Sequence[int], *, alignment: str = "weight_matching",
    alignment_options: Mapping[str, Any] | None = None, samples: int = 1000, batch_size: int = 64,
    epochs: int = 10, lr: float = 1e-2, optimizer: str = "adam", init: float | None = None,
    weight_decay: float = 0.0, order: Sequence[int] | None = None,
) -> Result:  # fmt: skip
    """NP Merge on ``samples`` training images (``epochs`` passes of ``batch_size``), after
    ``alignment`` (``none`` = unaligned); k > 2 models by successive pairwise merges in
    ``order`` (the zoo's model indices, filtered to the merged ones; default ascending).
    ``init`` = None starts the k-th merge at the uniform average (``merging.np_merge``)."""
    states = [m.zoo.states[i] for i in models]
    sequence = [i for i in (order or sorted(models)) if i in models]
    indices = sample_indices(len(m.data.train_y), samples, m.seed)
    generator = torch.Generator().manual_seed(m.seed)

    def data() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(m.data, "train", indices, batch_size, generator=generator)

    def align(reference: State, state: State) -> State:
        return m.align(reference, state, alignment, alignment_options or {})

    merged, _ = np_merge_many(
        m.template, states, data, align=None if alignment == "none" else align,
        order=[list(models).index(i) for i in sequence], init=init, reset_bn=True,
        steps=epochs * -(-len(indices) // batch_size), lr=lr, optimizer=optimizer,
        weight_decay=weight_decay, device=m.device,
    )  # fmt: skip
    return [({}, m.logits(merged))]


METHODS: dict[str, Callable[..., Result]] = {
    f.__name__: f for f in (base_models, ensemble, direct_average, aligned_average, np_merge)
}
ALIGNMENT_FNS: dict[str, Callable] = {
    "weight_matching": weight_matching,
    "activation_matching": activation_matching,
    "zipit": zipit,
    "cca": cca_merge,
}
MIN_MODELS = {
    "base_models": 1,
    "ensemble": 2,
    "direct_average": 2,
    "aligned_average": 2,
    "np_merge": 2,
}


def check_method(
    name: str, fn: str, models: Sequence[int], options: Mapping[str, Any], num_models: int
) -> None:
    """Raise, naming method ``name`` and the option at fault, before anything runs."""
    problem = next(_problems(fn, models, options, num_models), None)
    if problem:
        raise ValueError(f"method {name!r}: {problem}")


def _problems(
    fn: str, models: Sequence[int], options: Mapping[str, Any], num_models: int
) -> Iterator[str]:
    if fn not in METHODS:
        yield f"unknown fn {fn!r}; valid: {', '.join(METHODS)}"
        return
    valid = [p.name for p in list(inspect.signature(METHODS[fn]).parameters.values())[2:]]
    for key in sorted(set(options) - set(valid)):
        yield f"unknown option {key!r}; valid: {', '.join(valid) or 'none'}"
    for k in models:
        if not MIN_MODELS[fn] <= k <= num_models:
            yield f"cannot combine {k} models (from {MIN_MODELS[fn]} to num_models={num_models})"
    alignment = options.get("alignment", "weight_matching")
    allowed = {"aligned_average": ALIGNMENTS, "np_merge": (*PERMUTATIONS, "none")}.get(fn, ())
    if allowed and alignment not in allowed:
        yield f"option 'alignment' must be one of {', '.join(allowed)}, got {alignment!r}"
    if fn == "aligned_average" and alignment in PAIRWISE and any(k != 2 for k in models):
        yield f"{alignment} merges exactly 2 models, got models={list(models)}"
    if alignment in ALIGNMENT_FNS:
        key = "options" if fn == "aligned_average" else "alignment_options"
        accepted = [
            p.name
            for p in inspect.signature(ALIGNMENT_FNS[alignment]).parameters.values()
            if p.default is not p.empty and p.name not in ("acts_a", "acts_b", "stats")
        ]
        for name in sorted(set(options.get(key) or {}) - set(accepted)):
            yield f"{key}: {alignment} has no option {name!r}; valid: {accepted}"
    if fn != "np_merge":
        return
    for key in ("samples", "batch_size", "epochs"):
        value = options.get(key, 1)
        if not isinstance(value, int) or value < 1:
            yield f"option {key!r} must be a positive integer, got {value!r}"
    if not float(options.get("lr", 1.0)) > 0:
        yield f"option 'lr' must be positive, got {options['lr']!r}"
    optimizer = options.get("optimizer", "adam")
    if optimizer not in OPTIMIZERS:
        yield f"option 'optimizer' must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}"
    order = options.get("order")
    if order is not None and sorted(order) != list(range(num_models)):
        yield f"option 'order' must list each model index 0..{num_models - 1} once, got {order}"
