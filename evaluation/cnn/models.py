"""CNNs trained from scratch for the different-initialisation regime, with their symmetries.

* ResNet-20 for CIFAR (He et al., CVPR 2016, Sec. 4.2): a 3x3 stem and three stages of three
  basic blocks at 16w, 32w, 64w channels (w = width multiplier); a block that changes the
  width or stride has a 1x1 conv + BatchNorm shortcut, so every stage is one residual stream.
* VGG-11 / VGG-16 with BatchNorm (Simonyan & Zisserman, ICLR 2015; Ioffe & Szegedy, 2015):
  3x3 conv-BN-ReLU stacks at 64w ... 512w channels, max-pooling, global average pooling and
  one linear classifier, the usual CIFAR variant.

Each model declares its permutation symmetry once (``permutation_axes``: for every permuted
state-dict key, the group acting on each axis, ``None`` for an axis no group acts on; the
format of ``merging.alignment.PermutationSpec``) and
its ``activation_points`` (for every group, the modules whose outputs are that group's
features), which is what weight matching, activation matching, ZipIt! and CCA Merge need
(Ainsworth et al., Git Re-Basin, ICLR 2023; Stoica et al., ZipIt!, ICLR 2024; Horoi et al.,
CCA Merge, 2024). A residual stream is one group shared by every layer that writes to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from merging.alignment import conv_axes, linear_axes, norm_axes

Axes = dict[str, tuple[str | None, ...]]

VGG_LAYERS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
}  # fmt: skip
ARCHITECTURES = ("resnet20", *VGG_LAYERS)


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _conv_bn_axes(conv: str, bn: str, out: str, inp: str | None) -> Axes:
    return {**conv_axes(conv, inp, out), **norm_axes(bn, out)}


class BasicBlock(nn.Module):
    """``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 with width multiplier ``width`` (16w, 32w, 64w channels)."""

    def __init__(self, width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        widths = [_channels(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        inp, stages = widths[0], []
        for s, out in enumerate(widths):
            blocks = [
                BasicBlock(inp if b == 0 else out, out, 2 if s and b == 0 else 1) for b in range(3)
            ]
            stages.append(nn.Sequential(*blocks))
            inp = out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))

    def permutation_axes(self) -> Axes:
        """Groups ``res1..res3`` (residual streams) and ``layerS.B.inner`` (block hidden units)."""
        axes = _conv_bn_axes("conv1", "bn1", "res1", None)
        prev = "res1"
        for s in (1, 2, 3):
            stream = f"res{s}"
            for b, block in enumerate(getattr(self, f"layer{s}")):
                name, inner = f"layer{s}.{b}", f"layer{s}.{b}.inner"
                axes |= _conv_bn_axes(f"{name}.conv1", f"{name}.bn1", inner, prev)
                axes |= _conv_bn_axes(f"{name}.conv2", f"{name}.bn2", stream, inner)
                if isinstance(block.shortcut, nn.Sequential):
                    axes |= _conv_bn_axes(f"{name}.shortcut.0", f"{name}.shortcut.1", stream, prev)
                prev = stream
        return axes | linear_axes("fc", prev, None)

    def activation_points(self) -> dict[str, list[str]]:
        """A stream's features are the stem's and its blocks' outputs; a block's hidden
        units are the output of its ``relu1``."""
        points: dict[str, list[str]] = {"res1": ["relu"], "res2": [], "res3": []}
        for s in (1, 2, 3):
            for b in range(3):
                points[f"res{s}"].append(f"layer{s}.{b}")
                points[f"layer{s}.{b}.inner"] = [f"layer{s}.{b}.relu1"]
        return points


class VGG(nn.Module):
    """VGG with BatchNorm: ``layers`` lists conv widths (before ``width`` scaling) and "M" pools.

    Pools use ``ceil_mode`` so small (e.g. 16x16 sandbox) images survive five poolings.
    """

    def __init__(
        self, layers: tuple, width: float = 1.0, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        self._convs: list[int] = []  # index of each conv in ``features``
        inp = in_channels
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            out = _channels(item, width)
            self._convs.append(len(modules))
            modules += [nn.Conv2d(inp, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            inp = out
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(inp, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def permutation_axes(self) -> Axes:
        """Group ``convI`` = the output channels of the I-th conv (0-based)."""
        axes: Axes = {}
        prev = None
        for i, idx in enumerate(self._convs):
            group = f"conv{i}"
            axes |= _conv_bn_axes(f"features.{idx}", f"features.{idx + 1}", group, prev)
            prev = group
        return axes | linear_axes("classifier", prev, None)

    def activation_points(self) -> dict[str, list[str]]:
        """Group ``convI``'s features are the output of the ReLU after its BatchNorm."""
        return {f"conv{i}": [f"features.{idx + 2}"] for i, idx in enumerate(self._convs)}


def check_architecture(arch: str, width: float) -> None:
    """Raise ``ValueError`` naming ``model.arch`` or ``model.width`` if they are invalid."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if not 0 < width < math.inf:
        raise ValueError(f"model.width must be positive and finite, got {width!r}")


def build_model(cfg: Mapping[str, Any], num_classes: int, seed: int | None = None) -> nn.Module:
    """The architecture ``cfg.arch`` (resnet20, vgg11, vgg16) at ``cfg.width``; with ``seed``,
    its initialisation is drawn from that seed without touching the global RNG."""
    arch, width = cfg.get("arch"), float(cfg.get("width", 1.0))
    check_architecture(arch, width)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if arch == "resnet20":
            return ResNet20(width, num_classes)
        return VGG(VGG_LAYERS[arch], width, num_classes)
