"""BatchNorm statistics after merging, and the data helpers shared by the data-driven mergers.

A merged network's BatchNorm running statistics no longer describe its activations (the
variance collapse of Jordan et al., "REPAIR: REnormalizing Permuted Activations for
Interpolation Repair", ICLR 2023); re-estimating them from data is the fix for BatchNorm
networks used throughout Git Re-Basin, ZipIt!, CCA Merge and NP Merge.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice

import torch
from torch import nn

Batches = Callable[[], Iterable] | Iterable


def iter_inputs(batches: Batches, num_batches: int | None = None) -> Iterator[torch.Tensor]:
    """The inputs ``x`` of ``batches`` (items ``x`` or ``(x, y, ...)``), the first
    ``num_batches`` if given; a callable is called once to get the iterable."""
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"option 'num_batches' must be a positive integer, got {num_batches!r}")
    source = batches() if callable(batches) else batches
    for item in islice(source, num_batches):
        yield item[0] if isinstance(item, tuple | list) else item


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers of ``model`` that track running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextmanager
def batchnorm_train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, BatchNorm layers are in train mode (batch statistics) and every other
    module in eval mode (no dropout); each module's mode is restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every module is in eval mode; modes are restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def reset_batchnorm(
    model: nn.Module, batches: Batches, num_batches: int | None = None
) -> nn.Module:
    """Recompute every BatchNorm's running mean/var from data, in place; returns ``model``.

    Running statistics are reset and re-estimated as cumulative averages (``momentum=None``)
    over ``batches`` (``x`` or ``(x, y, ...)``; the first ``num_batches`` if given), with
    BatchNorm layers in train mode and everything else in eval mode, without gradients.
    Only ``running_mean``, ``running_var`` and ``num_batches_tracked`` change; modes and
    momenta are restored afterwards. A model without BatchNorm is returned untouched.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    device = model_device(model)
    momenta = [m.momentum for m in layers]
    seen = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        with batchnorm_train_mode(model), torch.no_grad():
            for x in iter_inputs(batches, num_batches):
                model(x.to(device))
                seen += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
    if seen == 0:
        raise ValueError("reset_batchnorm: `batches` yielded no data")
    return model


def recompute_batchnorm_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    batches: Batches,
    num_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """``state`` with its BatchNorm statistics re-estimated on ``batches`` by
    :func:`reset_batchnorm`, run on a copy of ``model`` (the architecture) loaded with
    ``state``; ``state`` is returned as is when the model has no BatchNorm."""
    if not batchnorm_layers(model):
        return dict(state)
    work = copy.deepcopy(model)
    work.load_state_dict({k: state[k] for k in work.state_dict()})
    reset_batchnorm(work, batches, num_batches)
    fresh = work.state_dict()
    return {k: fresh[k].to(v.device) if k in fresh else v for k, v in state.items()}


def channel_moments(
    model: nn.Module, module: nn.Module, batches: Batches, num_batches: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``module``'s output (channels on axis 1), eval mode."""
    sums: list[torch.Tensor] = []

    def hook(m, inputs, out):
        rows = out.detach().movedim(1, -1).reshape(-1, out.shape[1]).double()
        moments = torch.stack(
            [rows.sum(0), (rows * rows).sum(0), rows.new_full((rows.shape[1],), len(rows))]
        )
        sums.append(moments)

    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            for x in iter_inputs(batches, num_batches):
                model(x.to(model_device(model)))
    finally:
        handle.remove()
    if not sums:
        raise ValueError("repair: `batches` yielded no data")
    total = torch.stack(sums).sum(0)
    mean = total[0] / total[2]
    return mean, (total[1] / total[2] - mean * mean).clamp_min(0).sqrt()


def repair(
    model: nn.Module,
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Batches,
    modules: Sequence[str],
    weight_a: float = 0.5,
    num_batches: int | None = None,
    eps: float = 1e-5,
) -> nn.Module:
    """REPAIR (Jordan et al., ICLR 2023): rescale the merged model's channels, in place.

    For each module named in ``modules`` (``nn.Linear`` / ``nn.ConvNd`` with a bias, in
    forward order), the merged model's output channel ``c`` gets the interpolated endpoint
    statistics ``mu_t = w mu_A + (1 - w) mu_B``, ``sd_t = w sd_A + (1 - w) sd_B``
    (``w = weight_a``): ``W_c <- W_c sd_t / sd_c``, ``b_c <- (b_c - mu_c) sd_t / sd_c + mu_t``,
    with the merged model's statistics measured after the earlier modules were corrected (one
    data pass per module). Endpoints are unchanged. For BatchNorm networks, resetting the
    statistics (``reset_batchnorm``) is the equivalent correction.
    """
    if not 0.0 <= weight_a <= 1.0:
        raise ValueError(f"option 'weight_a' must be in [0, 1], got {weight_a!r}")
    found = [dict(m.named_modules()) for m in (model, model_a, model_b)]
    for name in modules:
        layer = found[0].get(name)
        if name not in found[1] or name not in found[2] or layer is None:
            raise KeyError(f"repair: module {name!r} is missing from a model")
        if getattr(layer, "bias", None) is None or getattr(layer, "weight", None) is None:
            raise ValueError(f"repair: module {name!r} needs a weight and a bias")
    for name in modules:
        mean_a, sd_a = channel_moments(model_a, found[1][name], batches, num_batches)
        mean_b, sd_b = channel_moments(model_b, found[2][name], batches, num_batches)
        mean, sd = channel_moments(model, found[0][name], batches, num_batches)
        target_mean = weight_a * mean_a + (1 - weight_a) * mean_b
        scale = (weight_a * sd_a + (1 - weight_a) * sd_b) / (sd + eps)
        layer = found[0][name]
        with torch.no_grad():
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.to(layer.weight).view(shape))
            layer.bias.copy_(((layer.bias.double() - mean) * scale + target_mean).to(layer.bias))
    return model
