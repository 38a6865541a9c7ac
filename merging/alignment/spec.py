"""Permutation specs: which hidden-unit group acts on each axis of each state-dict entry.

Following Git Re-Basin (Ainsworth et al., "Git Re-Basin: Merging Models modulo Permutation
Symmetries", ICLR 2023), a network's permutation symmetries are declared once per architecture
as ``axes[key] = (group or None, ...)``, one entry per tensor axis. Permuting group ``g`` by
``p`` (``p[i]`` = index in the original of the unit placed at ``i``) re-indexes every axis that
``g`` acts on, ``W'[..., i, ...] = W[..., p[i], ...]``, and leaves the function unchanged.

Beyond permutations, ZipIt! and CCA Merge map a group's ``n`` features linearly to ``k`` new
ones. That needs the *role* of each axis: an axis that **produces** the group's features
(a weight's output axis, a bias, BatchNorm entries) is transformed by the merge matrix
``M`` (k x n), ``W' = M W``; an axis that **consumes** them (a weight's input axis) by the
unmerge matrix ``U`` (n x k), ``W' = W U``. By default axis 0 produces and every later axis
consumes, which holds for ``nn.Linear`` / ``nn.ConvNd`` weights, biases and norm layers;
keys where it does not (e.g. ``nn.Embedding`` whose axis 1 produces, transposed convs) list
their consuming axes in ``consumes``.

Entries that hold statistics of the data rather than learned weights (BatchNorm
``running_mean`` / ``running_var``) are permuted with their group, so a permuted network
still computes the same function, but weight matching does not score them
(``PermutationSpec.statistics``), as in both reference implementations.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

Axes = tuple[str | None, ...]
State = Mapping[str, torch.Tensor]
Perms = dict[str, torch.Tensor]
STATISTIC_NAMES = ("running_mean", "running_var")  # the buffers of torch's ``_BatchNorm``


class PermutationSpec:
    """The permutation group on every axis of every permuted state-dict entry.

    ``axes``: ``{key: (group | None, ...)}``, one element per axis of ``state[key]``
    (``None`` = not permuted). Keys absent from ``axes`` are never permuted (e.g. a
    classifier bias, BatchNorm ``num_batches_tracked``).
    ``consumes``: ``{key: (axis, ...)}`` overriding, for the listed keys, which permuted axes
    consume their group's features (default: every permuted axis but axis 0).
    ``statistics``: the keys that hold statistics of the data, permuted but never scored by
    weight matching; default: every key whose last name is ``running_mean`` or
    ``running_var`` (the names of BatchNorm's buffers in a torch state dict).
    ``perm_to_axes``: derived ``{group: [(key, axis), ...]}``.
    """

    def __init__(
        self,
        axes: Mapping[str, Axes],
        consumes: Mapping[str, tuple[int, ...]] | None = None,
        statistics: Collection[str] | None = None,
    ):
        self.axes: dict[str, Axes] = {k: tuple(v) for k, v in axes.items()}
        if statistics is None:
            statistics = [k for k in self.axes if k.rsplit(".", 1)[-1] in STATISTIC_NAMES]
        self.statistics: frozenset[str] = frozenset(statistics)
        unknown = sorted(self.statistics - set(self.axes))
        if unknown:
            raise KeyError(f"statistics names keys {unknown} that are not in the spec's axes")
        self.consumes: dict[str, tuple[int, ...]] = dict(consumes or {})
        for key, ax in self.consumes.items():
            if key not in self.axes:
                raise KeyError(f"consumes names key {key!r}, which is not in the spec's axes")
            bad = [a for a in ax if not 0 <= a < len(self.axes[key]) or self.axes[key][a] is None]
            if bad:
                raise ValueError(f"consumes[{key!r}] lists axes {bad} that no group permutes")
        self.perm_to_axes: dict[str, list[tuple[str, int]]] = {}
        for key, groups in self.axes.items():
            for axis, group in enumerate(groups):
                if group is not None:
                    self.perm_to_axes.setdefault(group, []).append((key, axis))

    def __repr__(self) -> str:
        return f"PermutationSpec({len(self.axes)} keys, groups={list(self.perm_to_axes)})"

    @property
    def groups(self) -> list[str]:
        """Group names in order of first appearance."""
        return list(self.perm_to_axes)

    def consuming(self, key: str, axis: int) -> bool:
        """Whether ``axis`` of ``key`` consumes (True) or produces (False) its group's features."""
        if key in self.consumes:
            return axis in self.consumes[key]
        return axis > 0

    def check(self, state: State) -> None:
        """Raise if a spec key is missing from ``state`` or has a different number of axes."""
        for key, groups in self.axes.items():
            if key not in state:
                raise KeyError(f"permutation spec key {key!r} is not in the state dict")
            if state[key].dim() != len(groups):
                raise ValueError(
                    f"permutation spec gives {len(groups)} axes for {key!r}, "
                    f"but the tensor has shape {tuple(state[key].shape)}"
                )

    def sizes(self, state: State) -> dict[str, int]:
        """``{group: number of units}``; raises naming key, axis and group if axes disagree."""
        self.check(state)
        out: dict[str, int] = {}
        for group, where in self.perm_to_axes.items():
            key0, axis0 = where[0]
            n = state[key0].shape[axis0]
            for key, axis in where[1:]:
                if state[key].shape[axis] != n:
                    raise ValueError(
                        f"permutation group {group!r}: axis {axis} of {key!r} has size "
                        f"{state[key].shape[axis]}, but axis {axis0} of {key0!r} has size {n}"
                    )
            out[group] = n
        return out


def check_pair(spec: PermutationSpec, state_a: State, state_b: State) -> dict[str, int]:
    """The groups' sizes; the two states must have the same keys and shapes."""
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))
        raise KeyError(f"the two state dicts differ in keys: {diff[:5]}")
    for key, a in state_a.items():
        if a.shape != state_b[key].shape:
            raise ValueError(
                f"{key!r} has shape {tuple(a.shape)} in A but {tuple(state_b[key].shape)} in B"
            )
    return spec.sizes(state_a)


def _check_perms(spec: PermutationSpec, state: State, perms: Mapping[str, torch.Tensor]) -> None:
    sizes = spec.sizes(state)
    missing = [g for g in sizes if g not in perms]
    if missing:
        raise KeyError(f"no permutation given for groups {missing}")
    extra = [g for g in perms if g not in sizes]
    if extra:
        raise KeyError(f"permutations given for groups {extra} that are not in the spec")
    for g, p in perms.items():
        if p.shape != (sizes[g],):
            raise ValueError(
                f"permutation of group {g!r} has shape {tuple(p.shape)}, expected ({sizes[g]},)"
            )
        if not torch.equal(p.cpu().sort().values, torch.arange(sizes[g])):
            raise ValueError(f"the permutation of group {g!r} is not a permutation of 0..n-1")


def permute_state(
    spec: PermutationSpec, state: State, perms: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with every axis of group ``g`` re-indexed by ``perms[g]``: ``W'[i] = W[p[i]]``.

    Exact (pure indexing, any dtype); keys outside the spec are carried unchanged.
    """
    _check_perms(spec, state, perms)
    out = dict(state)
    for key, groups in spec.axes.items():
        t = state[key]
        for axis, group in enumerate(groups):
            if group is not None:
                t = t.index_select(axis, perms[group].to(t.device))
        out[key] = t
    return out


def transform_state(
    spec: PermutationSpec,
    state: State,
    merge: Mapping[str, torch.Tensor],
    unmerge: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map each group's ``n`` features linearly to ``k`` new ones (ZipIt!, CCA Merge).

    Producing axes of group ``g`` are contracted with ``merge[g]`` (k x n), ``W' = M W``;
    consuming axes with ``unmerge[g]`` (n x k), ``W' = W U``. Permutations are the special
    case ``M = P``, ``U = P^T``. Spec entries must be floating point; others are carried.
    """
    spec.sizes(state)
    for g in spec.groups:
        if g not in merge or g not in unmerge:
            raise KeyError(f"no merge/unmerge matrix given for group {g!r}")
    out = dict(state)
    for key, groups in spec.axes.items():
        t = state[key]
        if not t.is_floating_point():
            raise TypeError(f"cannot transform non-float entry {key!r} ({t.dtype}) linearly")
        x = t.double()
        for axis, group in enumerate(groups):
            if group is None:
                continue
            mat = unmerge[group].T if spec.consuming(key, axis) else merge[group]
            x = torch.tensordot(mat.to(x), x, dims=([1], [axis])).movedim(0, axis)
        out[key] = x.to(t.dtype)
    return out


def random_permutations(
    spec: PermutationSpec, state: State, generator: torch.Generator | None = None
) -> Perms:
    """A uniformly random permutation per group."""
    return {g: torch.randperm(n, generator=generator) for g, n in spec.sizes(state).items()}


def identity_permutations(spec: PermutationSpec, state: State) -> Perms:
    """The identity permutation per group."""
    return {g: torch.arange(n) for g, n in spec.sizes(state).items()}


def invert_permutation(p: torch.Tensor) -> torch.Tensor:
    """``q`` with ``q[p[i]] = i``, so permuting by ``p`` then by ``q`` restores the original."""
    return torch.argsort(p)


def linear_axes(
    prefix: str, p_in: str | None, p_out: str | None, bias: bool = True
) -> dict[str, Axes]:
    """Axes of an ``nn.Linear`` named ``prefix``: weight (out, in), bias (out)."""
    axes: dict[str, Axes] = {f"{prefix}.weight": (p_out, p_in)}
    if bias:
        axes[f"{prefix}.bias"] = (p_out,)
    return axes


def conv_axes(
    prefix: str, p_in: str | None, p_out: str | None, bias: bool = False
) -> dict[str, Axes]:
    """Axes of an ``nn.Conv2d`` named ``prefix``: weight (out, in, kh, kw), bias (out)."""
    axes: dict[str, Axes] = {f"{prefix}.weight": (p_out, p_in, None, None)}
    if bias:
        axes[f"{prefix}.bias"] = (p_out,)
    return axes


def norm_axes(prefix: str, p: str, running_stats: bool = True) -> dict[str, Axes]:
    """Axes of a BatchNorm / LayerNorm over ``p``'s features (running stats for BatchNorm,
    which a spec treats as ``statistics`` by their names)."""
    names = ["weight", "bias"] + (["running_mean", "running_var"] if running_stats else [])
    return {f"{prefix}.{n}": (p,) for n in names}
