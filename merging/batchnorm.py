"""BatchNorm statistics after merging, and the data helpers shared by the data-driven mergers.

A merged network's BatchNorm running statistics no longer describe its activations (the
variance collapse of Jordan et al., "REPAIR: REnormalizing Permuted Activations for
Interpolation Repair", ICLR 2023); re-estimating them from data is the fix for BatchNorm
networks used throughout Git Re-Basin, ZipIt!, CCA Merge and NP Merge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
