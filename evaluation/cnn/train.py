"""Training CNNs from scratch (deterministic by seed) and scoring them.

SGD with Nesterov momentum and weight decay; the learning rate rises linearly over
``warmup_epochs`` and then decays linearly to 0 (a one-cycle schedule, as commonly used
for CIFAR ResNets and VGGs in the merging literature, e.g. Jordan et al., REPAIR, ICLR 2023).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from evaluation.cnn.data import ImageData, batches


@dataclass(frozen=True)
class TrainRecipe:
    """How each base model is trained (part of the zoo's cache key)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    augment: bool = True

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> TrainRecipe:
        """From ``benchmark.training``; unknown keys and non-positive sizes are errors."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - set(fields))
        if unknown:
            raise KeyError(
                f"benchmark.training has unknown option {unknown[0]!r}; valid: {', '.join(fields)}"
            )
        recipe = cls(**dict(cfg))
        for name in ("epochs", "batch_size", "lr"):
            if not getattr(recipe, name) > 0:
                raise ValueError(
                    f"benchmark.training.{name} must be positive, got {getattr(recipe, name)!r}"
                )
        return recipe


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
    total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(total - warmup, 1))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for _ in range(recipe.epochs):
        for x, y in batches(data, "train", indices, recipe.batch_size, generator=generator,
                            augment=recipe.augment):  # fmt: skip
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
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
