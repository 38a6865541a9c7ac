"""What a merge method of kind ``models`` gets (``fn(context, *, option=default)``): the models
to merge and what the data-driven steps need, with no file or network I/O.

>>> merged = merge_models("weight_matching", context, max_iter=100)

A family builds the context from its zoo (e.g. ``experiments.pipelines.different_init``);
:func:`standin_context` builds a tiny random one, on which options are checked before a run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from merging.alignment import PairStats, PermutationSpec, conv_axes, linear_axes, norm_axes
from merging.alignment.features import pair_statistics
from merging.batchnorm import recompute_batchnorm_state

State = Mapping[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
Batches = Callable[[], Iterator[Batch]]


@dataclass
class ModelContext:
    """The models to merge and what merging them needs.

    * ``states``: the models to merge, in order (state dicts of ``template``'s architecture).
    * ``template``: a module of the architecture, on ``device``; its own weights are never
      read (methods run copies loaded with a state, :meth:`network`).
    * ``spec``: the architecture's permutation symmetries.
    * ``batches()``: an iterator of ``(x, y)`` merge batches of the train split, the same
      batches in the same order on every call (activation statistics; BatchNorm resets
      unless ``reset_batchnorm`` is given).
    * ``activation_points``: ``{group: [module name, ...]}``, the modules whose outputs
      (channels on axis 1) carry each group's features.
    * ``train_batches(samples, batch_size)``: for methods that learn on data (NP Merge): a
      callable like ``batches`` over ``samples`` training examples drawn with ``seed``
      (``min(samples, train_size)`` of them), reshuffled on every call; ``train_size``: how
      many training examples there are to draw from.
    * ``reset_batchnorm(state)``: ``state`` with its BatchNorm statistics recomputed (the
      hook every merged state goes through, NP Merge's intermediate merges included);
      default: on ``batches``, with :func:`merging.batchnorm.recompute_batchnorm_state`.
      The different-initialisation pipeline passes the authors' reset, one epoch over the
      training images with the training augmentation (shoroi/align-n-merge
      ``reset_bn_stats``), and resets the base models with it before merging.

    ``pair_stats`` is memoised per pair of state objects (the same two states give the same
    statistics), so a search over a method's options computes them once per context.

    Every state is checked when the context is built (and by :meth:`with_states`): it must
    hold exactly ``template``'s state-dict keys, each with the template's shape and dtype,
    and no NaN or infinite float entry; ``KeyError`` / ``ValueError`` name the model (its
    index in ``states``) and the key, before any method computes on it.
    """

    states: Sequence[State]
    template: nn.Module
    spec: PermutationSpec
    batches: Batches
    activation_points: Mapping[str, Sequence[str]] = field(default_factory=dict)
    train_batches: Callable[[int, int], Batches] | None = None
    train_size: int = 0
    reset_batchnorm: Callable[[State], dict[str, torch.Tensor]] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    _pair_memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_states(self.template, self.states)
        if self.reset_batchnorm is None:
            self.reset_batchnorm = functools.partial(
                recompute_batchnorm_state, self.template, batches=self.batches
            )

    def with_states(self, states: Sequence[State]) -> ModelContext:
        """The same context over other models (e.g. the first ``k``)."""
        return dataclasses.replace(self, states=list(states))

    def network(self, state: State) -> nn.Module:
        """A copy of ``template`` loaded with ``state``, in eval mode, on ``device``."""
        net = copy.deepcopy(self.template)
        net.load_state_dict(dict(state))
        return net.eval()

    def pair_stats(self, state_a: State, state_b: State) -> dict[str, PairStats]:
        """Moments of both models' features per group on ``batches``, over every activation
        point of the group (e.g. all blocks writing to one residual stream) and every
        position (:func:`merging.alignment.pair_statistics`)."""
        if not self.activation_points:
            raise ValueError("this context declares no activation_points")
        key = (id(state_a), id(state_b))
        held = self._pair_memo.get(key)
        if held is None or held[0] is not state_a or held[1] is not state_b:
            stats = pair_statistics(
                self.network(state_a), self.network(state_b), self.batches,
                self.activation_points,
            )  # fmt: skip
            held = self._pair_memo[key] = (state_a, state_b, stats)
        return dict(held[2])

    def pair(self, method: str) -> tuple[State, State]:
        """The two states of a method that merges exactly two models; ``ValueError``
        otherwise."""
        if len(self.states) != 2:
            raise ValueError(f"{method} merges exactly 2 models, got {len(self.states)}")
        return self.states[0], self.states[1]

    def training_data(self, samples: int, batch_size: int) -> tuple[Batches, int]:
        """``train_batches(samples, batch_size)`` and its number of batches per pass."""
        if self.train_batches is None or self.train_size < 1:
            raise ValueError("this context provides no training data (train_batches)")
        return self.train_batches(samples, batch_size), -(
            -min(samples, self.train_size) // batch_size
        )


def check_states(template: nn.Module, states: Sequence[State]) -> None:
    """Raise unless every state has ``template``'s keys (``KeyError``), and for each key its
    shape and dtype with finite float entries (``ValueError``), naming the model (index in
    ``states``) and the key."""
    expected = template.state_dict()
    for i, state in enumerate(states):
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing:
            raise KeyError(f"model {i} lacks the architecture's entries {missing[:5]}")
        if extra:
            raise KeyError(f"model {i} has entries the architecture does not: {extra[:5]}")
        for key, ref in expected.items():
            t = state[key]
            if t.shape != ref.shape:
                raise ValueError(
                    f"model {i}: {key!r} has shape {tuple(t.shape)}, the architecture's is "
                    f"{tuple(ref.shape)} (models of another width or number of classes?)"
                )
            if t.dtype != ref.dtype:
                raise ValueError(
                    f"model {i}: {key!r} is {t.dtype}, the architecture's is {ref.dtype}"
                )
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"model {i}: {key!r} has NaN or infinite entries")


class _StandIn(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, average pool, linear: 4 channels, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def standin_context(num_models: int, train_size: int = 8) -> ModelContext:
    """A tiny context of ``num_models`` random models (:class:`_StandIn`) and ``train_size``
    random 4x4 images, on the CPU: merging it takes milliseconds, so a run can call each
    method with its options on it and fail on a bad option before any long computation."""
    spec = PermutationSpec(
        {
            **conv_axes("conv1", None, "h1", bias=True), **norm_axes("bn1", "h1"),
            **conv_axes("conv2", "h1", "h2", bias=True), **norm_axes("bn2", "h2"),
            **linear_axes("fc", "h2", None),
        }
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(train_size, 3, 4, 4, generator=generator)
    y = torch.randint(0, 3, (train_size,), generator=generator)
    states = []
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left untouched
        for seed in range(num_models):
            torch.manual_seed(seed)
            states.append(_StandIn().state_dict())
        template = _StandIn()

    def batches() -> Iterator[Batch]:
        return iter([(x[:4], y[:4]), (x[4:], y[4:])])

    def train_batches(samples: int, batch_size: int) -> Batches:
        n = min(samples, train_size)
        return lambda: zip(x[:n].split(batch_size), y[:n].split(batch_size), strict=True)

    return ModelContext(
        states, template, spec, batches, {"h1": ["relu1"], "h2": ["relu2"]},
        train_batches=train_batches, train_size=train_size,
    )  # fmt: skip
