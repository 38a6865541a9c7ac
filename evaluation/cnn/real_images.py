"""MNIST and Fashion-MNIST for the CNN zoo: the real images of the registry packages
(:mod:`evaluation.real.images`), as the CIFAR architectures take them.

The 28 x 28 grey images are copied to 3 channels (the CIFAR stems of ResNet-20 and VGG
read 3; a copied channel only triples the first convolution's few multiply-adds) and are
not padded: both networks end in global average pooling and VGG pools with ``ceil_mode``,
so 28 px pass through five poolings (28, 14, 7, 4, 2, 1). Subsets of the official splits
(``train_size`` / ``test_size``, drawn with ``seed``) keep a CPU table to minutes; the val
split is then held out of the train subset by the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from evaluation.cnn.config import RealImagesConfig
from evaluation.cnn.data import ImageData, sample_indices
from evaluation.real.images import DATASETS, classnames, load_images

CHANNELS = 3


@dataclass
class RealImages(RealImagesConfig):
    """MNIST or Fashion-MNIST of ``benchmark.dataset`` (fields:
    :class:`evaluation.cnn.config.RealImagesConfig`); ``load()`` reads it from the cache and
    raises :class:`evaluation.real.sources.SourceMissing`, with the command that installs
    it, when the source is not there."""

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(
                f"benchmark.dataset.name must be one of {', '.join(DATASETS)}, got {self.name!r}"
            )
        for key in ("train_size", "test_size"):
            size = getattr(self, key)
            if size is not None and size < 1:
                raise ValueError(f"benchmark.dataset.{key} must be null or >= 1, got {size!r}")
        if self.seed < 0:
            raise ValueError(f"benchmark.dataset.seed must be >= 0, got {self.seed!r}")

    def load(self) -> ImageData:
        """Train and test subsets as uint8 (N, 3, 28, 28) tensors (official order kept)."""
        parts = []
        for split, size in (("train", self.train_size), ("test", self.test_size)):
            x, y = load_images(self.name, split, self.cache_dir)
            idx = np.arange(len(y)) if size is None else sample_indices(len(y), size, self.seed)
            images = torch.from_numpy(np.ascontiguousarray(x[idx]))[:, None]
            parts += [images.expand(-1, CHANNELS, -1, -1).contiguous(),
                      torch.from_numpy(y[idx].astype(np.int64))]  # fmt: skip
        return ImageData(self.name, *parts, num_classes=len(classnames(self.name)))
