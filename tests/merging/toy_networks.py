"""Small networks with their permutation specs and activation points, shared by the tests of
the alignment algorithms, BatchNorm resets and the whole-model merge methods."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from merging.alignment import (
    PermutationSpec,
    conv_axes,
    linear_axes,
    norm_axes,
    permute_state,
    random_permutations,
)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(8, 16), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(16, 16), nn.ReLU()
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


MLP_SPEC = PermutationSpec(
    {
        **linear_axes("fc1", None, "h1"),
        **linear_axes("fc2", "h1", "h2"),
        **linear_axes("fc3", "h2", None),
    }
)
MLP_POINTS = {"h1": "act1", "h2": "act2"}


class TinyResNet(nn.Module):
    """Stem, one identity block, one downsampling block with a conv shortcut, linear head."""

    def __init__(self) -> None:
        super().__init__()
        conv = lambda i, o, s=1: nn.Conv2d(i, o, 3, s, 1, bias=False)  # noqa: E731
        self.conv0, self.bn0, self.relu0 = conv(3, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv1, self.bn1, self.relu1 = conv(6, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = conv(6, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv3, self.bn3, self.relu3 = conv(6, 10, 2), nn.BatchNorm2d(10), nn.ReLU()
        self.conv4, self.bn4, self.relu4 = conv(10, 10), nn.BatchNorm2d(10), nn.ReLU()
        self.short = nn.Conv2d(6, 10, 1, 2, bias=False)
        self.bn_short = nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        h = self.bn4(self.conv4(self.relu3(self.bn3(self.conv3(x)))))
        x = self.relu4(h + self.bn_short(self.short(x)))
        return self.fc(x.mean((2, 3)))


RES_SPEC = PermutationSpec(
    {
        **conv_axes("conv0", None, "r1"),
        **norm_axes("bn0", "r1"),
        **conv_axes("conv1", "r1", "b1"),
        **norm_axes("bn1", "b1"),
        **conv_axes("conv2", "b1", "r1"),
        **norm_axes("bn2", "r1"),
        **conv_axes("conv3", "r1", "b2"),
        **norm_axes("bn3", "b2"),
        **conv_axes("conv4", "b2", "r2"),
        **norm_axes("bn4", "r2"),
        **conv_axes("short", "r1", "r2"),
        **norm_axes("bn_short", "r2"),
        **linear_axes("fc", "r2", None),
    }
)
RES_POINTS = {"r1": "relu2", "b1": "relu1", "b2": "relu3", "r2": "relu4"}

CASES = [
    pytest.param(MLP, MLP_SPEC, MLP_POINTS, (8,), id="mlp"),
    pytest.param(TinyResNet, RES_SPEC, RES_POINTS, (3, 8, 8), id="resnet"),
]


def seeded_model(cls: type[nn.Module], seed: int) -> nn.Module:
    """``cls()`` drawn from ``seed``, with non-trivial BatchNorm statistics and affine
    parameters, in eval mode."""
    torch.manual_seed(seed)
    model = cls()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def inputs(shape: tuple[int, ...], n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def with_state(model: nn.Module, state) -> nn.Module:
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out.eval()


def permuted_copy(model: nn.Module, spec: PermutationSpec, seed: int = 3):
    """``model`` with every group randomly permuted (the same function), and the permutations."""
    state = model.state_dict()
    perms = random_permutations(spec, state, torch.Generator().manual_seed(seed))
    return with_state(model, permute_state(spec, state, perms)), perms
