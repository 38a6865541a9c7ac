"""Local stand-ins for the CNN family's data: a tiny dataset in the form `datasets` gives
CIFAR, and a miniature different-initialisation benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.cnn.benchmark import DifferentInitBenchmark
from evaluation.cnn.config import BatchNormReset, MergeData, Setting, TrainRecipe, ValSplit
from evaluation.cnn.data import SandboxImages


def write_cifar_standin(
    path: Path, label_key: str = "label", num_classes: int = 10, n=(30, 12), size: int = 32
) -> Path:
    """A tiny dataset in the form `datasets` gives CIFAR: PIL images and ClassLabel labels."""
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"img": datasets.Image(), label_key: datasets.ClassLabel(num_classes=num_classes)}
    )
    splits = {}
    for split, count in zip(("train", "test"), n, strict=True):
        images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        splits[split] = datasets.Dataset.from_dict(
            {"img": [datasets.Image().encode_example(im) for im in images],
             label_key: (np.arange(count) % num_classes).tolist()},
            features=features,
        )  # fmt: skip
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


RECIPE = TrainRecipe(
    epochs=1, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_epochs=1.0,
    augment=True,
)  # fmt: skip


def tiny_benchmark(
    num_models: int = 2, val: int = 16, reset: int | None = None, **training
) -> DifferentInitBenchmark:
    """4 classes of 8x8 sandbox images (96 train, ``val`` of them held out, 32 test), settings
    same and cross (1.0); BatchNorm resets over ``reset`` images (None: a full epoch)."""
    recipe = TrainRecipe(**{**RECIPE.__dict__, **training})
    return DifferentInitBenchmark(
        name="sb",
        dataset=SandboxImages(name="sb", num_classes=4, image_size=8, train_size=96,
                              test_size=32, noise=0.1, seed=0),
        num_models=num_models,
        settings={"same": Setting("same"), "cross": Setting("cross", 1.0, 0)},
        training=recipe,
        val=ValSplit(samples=val, seed=0),
        merge_data=MergeData(samples=32, batch_size=16, seed=0),
        batchnorm_reset=BatchNormReset(samples=reset, batch_size=16, seed=0),
    )  # fmt: skip
