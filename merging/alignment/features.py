"""Features of two models on the same inputs, the statistics the data-driven alignments use.

Activation matching, ZipIt! and CCA Merge need only the first and second moments of the
concatenated features ``[f_A, f_B]`` of each group, so activations are streamed into
``PairStats`` (O(n^2) memory) instead of being stored (O(N n)). ``pair_statistics`` is the
one collector: forward hooks at each group's activation points, both models in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from merging.batchnorm import Batches, eval_mode, iter_inputs, model_device

Acts = Mapping[str, torch.Tensor]


class PairStats:
    """Running moments of the concatenated features ``[f_A, f_B]`` (2n) of one group.

    ``update(a, b)`` adds rows (N, n) of A's and B's activations on the same inputs; ``mean``,
    ``cov`` (2n x 2n, population) and ``corr`` follow. Float64 sums on the activations' device.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    @classmethod
    def from_acts(cls, a: torch.Tensor, b: torch.Tensor) -> PairStats:
        stats = cls()
        stats.update(a, b)
        return stats

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.dim() != 2 or a.shape != b.shape:
            raise ValueError(
                f"activations must be (N, n) and equal in shape, got {tuple(a.shape)} for A "
                f"and {tuple(b.shape)} for B"
            )
        x = torch.cat([a.detach(), b.detach().to(a.device)], 1).double()
        if self._sum is None:
            self._sum, self._outer = x.sum(0), x.T @ x
        elif x.shape[1] != self._sum.shape[0]:
            raise ValueError(f"activations have {x.shape[1] // 2} features, expected {self.width}")
        else:
            self._sum += x.sum(0)
            self._outer += x.T @ x
        self.count += x.shape[0]

    @property
    def width(self) -> int:
        """Number of features per model, ``n``."""
        if self._sum is None:
            raise ValueError("PairStats has seen no activations")
        return self._sum.shape[0] // 2

    @property
    def mean(self) -> torch.Tensor:
        self.width  # noqa: B018  (raises if empty)
        return self._sum / self.count

    @property
    def cov(self) -> torch.Tensor:
        mean = self.mean
        cov = self._outer / self.count - torch.outer(mean, mean)
        return (cov + cov.T) / 2

    def corr(self, eps: float = 1e-12) -> torch.Tensor:
        """Pearson correlations; a constant feature correlates 0 with everything."""
        cov = self.cov
        std = cov.diagonal().clamp_min(0).sqrt()
        return cov / torch.outer(std, std).clamp_min(eps)


def pair_stats_from(
    acts_a: Acts | None, acts_b: Acts | None, stats: Mapping[str, PairStats] | None
) -> dict[str, PairStats]:
    """``stats``, or PairStats built from ``acts_a`` / ``acts_b`` (exactly one of the two)."""
    if stats is not None:
        if acts_a is not None or acts_b is not None:
            raise ValueError("pass either acts_a and acts_b, or stats, not both")
        return dict(stats)
    if acts_a is None or acts_b is None:
        raise ValueError("pass acts_a and acts_b (activations per group), or stats")
    if set(acts_a) != set(acts_b):
        raise KeyError(f"activation groups differ: A has {sorted(acts_a)}, B has {sorted(acts_b)}")
    out = {}
    for g in acts_a:
        try:
            out[g] = PairStats.from_acts(acts_a[g], acts_b[g])
        except ValueError as err:
            raise ValueError(f"group {g!r}: {err}") from None
    return out


def require_groups(stats: Mapping[str, PairStats], sizes: Mapping[str, int]) -> None:
    """Raise unless ``stats`` covers every group of ``sizes`` with that many features."""
    missing = [g for g in sizes if g not in stats]
    if missing:
        raise KeyError(f"no activations for permutation groups {missing}")
    for g, n in sizes.items():
        if stats[g].width != n:
            raise ValueError(
                f"group {g!r}: activations have {stats[g].width} features, weights {n}"
            )


def _rows(out: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N * spatial, C)."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise TypeError("an activation point must output a tensor (N, C, ...)")
    return out.detach().movedim(1, -1).reshape(-1, out.shape[1])


Points = Mapping[str, str | Sequence[str]]


def _point_lists(points: Points) -> dict[str, list[str]]:
    """``{group: [module name, ...]}`` from one name or a list of names per group."""
    out = {g: [names] if isinstance(names, str) else list(names) for g, names in points.items()}
    empty = [g for g, names in out.items() if not names]
    if empty:
        raise ValueError(f"activation points of groups {empty} name no module")
    return out


def _forward(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """``{module name: rows}`` of one forward pass of ``x`` (no gradient)."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise KeyError(f"activation points name no module of the model: {missing}")
    acts: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable:
        def keep(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
            if name in acts:
                raise RuntimeError(f"activation point {name!r} ran twice in one forward pass")
            acts[name] = _rows(out)

        return keep

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            model(x.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in names if name not in acts]
    if missing:
        raise RuntimeError(f"activation points {missing} were not reached by the forward pass")
    return acts


def _all_names(points: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in points.values() for name in names))


def collect_activations(
    model: nn.Module, batches: Batches, points: Points, num_batches: int | None = None
) -> dict[str, torch.Tensor]:
    """``{group: (N * spatial, C)}`` outputs of the modules ``points[group]`` (eval mode).

    ``points`` maps each group to the name (as in ``named_modules``) of the module whose output,
    channels on axis 1, carries the group's features, e.g. the ReLU after a conv/BN pair; or to
    a list of names (e.g. every block writing to one residual stream), whose rows are stacked.
    """
    points = _point_lists(points)
    chunks: dict[str, list[torch.Tensor]] = {g: [] for g in points}
    with eval_mode(model):
        for x in iter_inputs(batches, num_batches):
            acts = _forward(model, x, _all_names(points))
            for g, names in points.items():
                chunks[g].extend(acts[name] for name in names)
    if not any(chunks.values()):
        raise ValueError("collect_activations: `batches` yielded no data")
    return {g: torch.cat(c) for g, c in chunks.items()}


def pair_statistics(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Batches,
    points: Points,
    num_batches: int | None = None,
) -> dict[str, PairStats]:
    """Stream A's and B's activations at ``points`` into PairStats, one per group.

    ``points`` as in ``collect_activations``. Both models run in eval mode on the same inputs
    (``batches`` yields ``x`` or ``(x, y, ...)``).
    """
    points = _point_lists(points)
    names = _all_names(points)
    stats = {g: PairStats() for g in points}
    with eval_mode(model_a), eval_mode(model_b):
        for x in iter_inputs(batches, num_batches):
            acts_a, acts_b = _forward(model_a, x, names), _forward(model_b, x, names)
            for g, group_names in points.items():
                for name in group_names:
                    stats[g].update(acts_a[name], acts_b[name])
    if not stats or next(iter(stats.values())).count == 0:
        raise ValueError("pair_statistics: `batches` yielded no data")
    return stats
