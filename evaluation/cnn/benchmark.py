"""The different-initialisation benchmark: one image dataset, ``num_models`` base models
trained from seeds ``0..num_models-1`` under each data setting, the training recipe, the
val split, the merge data and the BatchNorm reset. Built from ``benchmark.*`` (schema
``benchmark/different_init``, :mod:`evaluation.cnn.config`); the data is loaded on first use.

The train split is cut in two: the val split (``benchmark.val``, drawn with its seed) and
the training pool, everything else. The base models, the merge data, NP Merge's images and
the BatchNorm resets all draw from the pool only, so val accuracy is measured on images no
model and no merge has seen.

Result rows of setting ``s`` carry the benchmark ``<name>_<s>`` (e.g. ``cifar10_cross``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from evaluation.cnn.config import DifferentInitConfig
from evaluation.cnn.data import (
    ImageData,
    batches,
    check_setting,
    model_subsets,
    sample_indices,
)
from evaluation.cnn.train import accuracy, predict, test_logits
from merging.options import non_negative, positive, positive_int

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DifferentInitBenchmark(DifferentInitConfig):
    """Models trained from different initialisations on ``dataset``, per data ``settings``
    (fields: :class:`evaluation.cnn.config.DifferentInitConfig`; ``dataset`` is built from
    its own config, e.g. :class:`evaluation.cnn.data.SandboxImages`).

    Raises ``ValueError`` naming the key (``benchmark.training.epochs``, ...) for an
    out-of-range or non-finite value (an infinite learning rate trains NaN models); the
    config schema has already checked names and types.
    """

    def __post_init__(self) -> None:
        training, merge_data = self.training, self.merge_data
        if self.num_models < 1:
            raise ValueError(
                f"benchmark.num_models must be a positive integer, got {self.num_models}"
            )
        if not self.settings:
            raise ValueError(f"benchmark {self.name!r} has no settings (e.g. same: {{kind: same}})")
        classes = getattr(self.dataset, "num_classes", None)  # known before loading (sandbox)
        for key, setting in self.settings.items():
            try:
                check_setting(
                    setting, self.num_models, classes if isinstance(classes, int) else None
                )
            except ValueError as err:
                raise ValueError(f"benchmark.settings.{key}: {err}") from None
        for key in ("epochs", "batch_size"):
            positive_int(f"benchmark.training.{key}", getattr(training, key))
        positive("benchmark.training.lr", training.lr)
        for key in ("momentum", "weight_decay", "warmup_epochs"):
            non_negative(f"benchmark.training.{key}", getattr(training, key))
        if not training.momentum < 1:
            raise ValueError(
                f"benchmark.training.momentum must be < 1 (SGD diverges at 1 and above), "
                f"got {training.momentum!r}"
            )
        reset = self.batchnorm_reset
        for where, section, keys in (
            ("merge_data", merge_data, (("samples", 1), ("batch_size", 1), ("seed", 0))),
            ("val", self.val, (("samples", 0), ("seed", 0))),
            ("batchnorm_reset", reset, (("batch_size", 1), ("seed", 0))),
        ):
            for key, least in keys:
                if getattr(section, key) < least:
                    raise ValueError(
                        f"benchmark.{where}.{key} must be an integer >= {least}, "
                        f"got {getattr(section, key)!r}"
                    )
        size = getattr(self.dataset, "train_size", None)  # known before loading (sandbox)
        if isinstance(size, int) and self.val.samples >= size:
            raise ValueError(
                f"benchmark.val.samples ({self.val.samples}) leaves no training images out of "
                f"benchmark.dataset.train_size={size}"
            )
        if reset.samples is not None and reset.samples < 1:
            raise ValueError(
                "benchmark.batchnorm_reset.samples must be null (one full epoch) or an "
                f"integer >= 1, got {reset.samples!r}"
            )

    @functools.cached_property
    def data(self) -> ImageData:
        """The dataset (``dataset.load()``), loaded or generated on first use."""
        return self.dataset.load()

    def setting_name(self, setting: str) -> str:
        """The benchmark name of ``setting``'s result rows: ``<name>_<setting>``."""
        return f"{self.name}_{setting}"

    @functools.cached_property
    def val_indices(self) -> np.ndarray:
        """Indices into train of the val split (sorted; empty without one)."""
        n = len(self.data.train_y)
        if self.val.samples >= n:
            raise ValueError(
                f"benchmark.val.samples ({self.val.samples}) leaves no training images out of {n}"
            )
        if self.val.samples == 0:
            return np.zeros(0, dtype=np.int64)
        return sample_indices(n, self.val.samples, self.val.seed)

    @functools.cached_property
    def pool(self) -> np.ndarray:
        """Indices into train of the training pool: every train image not in the val split."""
        return np.setdiff1d(np.arange(len(self.data.train_y)), self.val_indices)

    @property
    def has_val(self) -> bool:
        """Whether the benchmark holds out a val split (``benchmark.val.samples > 0``)."""
        return self.val.samples > 0

    @property
    def train_size(self) -> int:
        """The number of images in the training pool."""
        return len(self.pool)

    def subsets(self, setting: str) -> list[np.ndarray]:
        """Training indices (into train) of each base model under ``setting``: the pool split
        by :func:`evaluation.cnn.data.model_subsets`."""
        data, pool = self.data, self.pool
        parts = model_subsets(
            data.train_y[pool], data.num_classes, self.num_models, self.settings[setting]
        )
        return [pool[part] for part in parts]

    def train_batches(
        self, samples: int, batch_size: int, seed: int, *, shuffle: bool = False
    ) -> Callable[[], Iterator[Batch]]:
        """A source of ``(x, y)`` batches of ``samples`` pool images drawn with ``seed`` (all
        if ``samples >= train_size``): in index order on every call, or with ``shuffle``
        reshuffled on every call from one generator seeded with ``seed``."""
        indices = self.pool[sample_indices(self.train_size, samples, seed)]
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return lambda: batches(self.data, "train", indices, batch_size, generator=generator)

    def merge_batches(self) -> Callable[[], Iterator[Batch]]:
        """The merge data (``benchmark.merge_data``), in the same order on every call."""
        md = self.merge_data
        return self.train_batches(md.samples, md.batch_size, md.seed)

    def reset_batches(self) -> Callable[[], Iterator[Batch]]:
        """The BatchNorm-reset data (``benchmark.batchnorm_reset``): one epoch over the pool
        (or ``samples`` of its images), shuffled and, when the recipe augments, augmented with
        the training augmentation, from a generator seeded afresh on every call, so every
        reset sees the same batches; in every setting over the whole pool, all classes. The
        authors' protocol (shoroi/align-n-merge ``core/utils.py`` ``reset_bn_stats`` on their
        augmented training loader)."""
        cfg, pool = self.batchnorm_reset, self.pool
        samples = len(pool) if cfg.samples is None else cfg.samples
        indices = pool[sample_indices(len(pool), samples, cfg.seed)]
        augment = self.training.augment

        def epoch() -> Iterator[Batch]:
            generator = torch.Generator().manual_seed(cfg.seed)
            return batches(self.data, "train", indices, cfg.batch_size, generator=generator,
                           augment=augment)  # fmt: skip

        return epoch

    def accuracy(
        self, model: nn.Module, device: str | torch.device = "cpu", split: str = "test"
    ) -> float:
        """Top-1 accuracy (%) of ``model`` (eval mode) on the whole ``split``: ``test``, or
        ``val`` (the held-out train images; ``ValueError`` without a val split)."""
        if split == "test":
            return accuracy(test_logits(model, self.data, device), self.data.test_y)
        if split != "val":
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        if not self.has_val:
            raise ValueError(f"benchmark {self.name!r} has no val split (benchmark.val.samples)")
        idx = self.val_indices
        inputs = (x for x, _ in batches(self.data, "train", idx, batch_size=500))
        return accuracy(predict(model, inputs, device), self.data.train_y[idx])
