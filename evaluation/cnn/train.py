"""Training CNNs from scratch (deterministic by seed) and scoring them.

SGD with Nesterov momentum and weight decay; the learning rate rises linearly over
``warmup_epochs`` and then decays linearly to 0 (a one-cycle schedule, as commonly used
for CIFAR ResNets and VGGs in the merging literature, e.g. Jordan et al., REPAIR, ICLR 2023),
through the shared loop of :mod:`evaluation.training`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.cnn.config import TrainRecipe
from evaluation.cnn.data import ImageData, batches
from evaluation.training import optimise, warmup_schedule


def train_model(
    model: nn.Module,
    data: ImageData,
    indices: np.ndarray,
    recipe: TrainRecipe,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "train",
) -> nn.Module:
    """Train ``model`` on ``data.train[indices]``; the batch order and augmentation are drawn
    from ``seed``, so equal seeds give equal models on the same device."""
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    groups = [  # no weight decay on biases and BatchNorm scales
        {"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD(
        groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0
    )
    steps_per_epoch = -(-len(indices) // recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    schedule = warmup_schedule(recipe.warmup_epochs * steps_per_epoch, total, decay="linear")

    def losses() -> Iterator[Callable[[], torch.Tensor]]:
        for _ in range(recipe.epochs):
            for x, y in batches(data, "train", indices, recipe.batch_size, generator=generator,
                                augment=recipe.augment):  # fmt: skip

                def loss(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    value = F.cross_entropy(model(x.to(device)), y.to(device))
                    value.backward()
                    return value

                yield loss

    optimise(optimizer, losses(), schedule, total=total, desc=desc, progress=progress)
    return model.eval()


@torch.no_grad()
def predict(
    model: nn.Module, inputs: Iterable[torch.Tensor], device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every batch of ``inputs``, concatenated on the CPU."""
    model.to(device).eval()
    return torch.cat([model(x.to(device)).float().cpu() for x in inputs])


def test_logits(
    model: nn.Module, data: ImageData, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Logits on the whole test split."""
    return predict(model, (x for x, _ in batches(data, "test", batch_size=500)), device)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in %."""
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()
