"""The different-initialisation benchmark: one image dataset, ``num_models`` base models
trained from seeds ``0..num_models-1`` under each data setting, the training recipe and the
merge data. Built from ``benchmark.*`` (schema ``benchmark/different_init``,
:mod:`evaluation.cnn.config`); the data is loaded on first use.

Result rows of setting ``s`` carry the benchmark ``<name>_<s>`` (e.g. ``cifar10_cross``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from evaluation.cnn.config import DifferentInitConfig
from evaluation.cnn.data import ImageData, batches, check_setting, sample_indices
from evaluation.cnn.train import accuracy, test_logits

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DifferentInitBenchmark(DifferentInitConfig):
    """Models trained from different initialisations on ``dataset``, per data ``settings``
    (fields: :class:`evaluation.cnn.config.DifferentInitConfig`; ``dataset`` is built from
    its own config, e.g. :class:`evaluation.cnn.data.SandboxImages`).

    Raises ``ValueError`` naming the key (``benchmark.training.epochs``, ...) for an
    out-of-range value; the config schema has already checked names and types.
    """

    def __post_init__(self) -> None:
        training, merge_data = self.training, self.merge_data
        if self.num_models < 1:
            raise ValueError(
                f"benchmark.num_models must be a positive integer, got {self.num_models}"
            )
        if not self.settings:
            raise ValueError(f"benchmark {self.name!r} has no settings (e.g. same: {{kind: same}})")
        for key, setting in self.settings.items():
            try:
                check_setting(setting, self.num_models)
            except ValueError as err:
                raise ValueError(f"benchmark.settings.{key}: {err}") from None
        for key in ("epochs", "batch_size", "lr"):
            if not getattr(training, key) > 0:
                raise ValueError(
                    f"benchmark.training.{key} must be positive, got {getattr(training, key)!r}"
                )
        for key in ("momentum", "weight_decay", "warmup_epochs"):
            if not getattr(training, key) >= 0:
                raise ValueError(
                    f"benchmark.training.{key} must be >= 0, got {getattr(training, key)!r}"
                )
        for key, least in (("samples", 1), ("batch_size", 1), ("seed", 0)):
            if getattr(merge_data, key) < least:
                raise ValueError(
                    f"benchmark.merge_data.{key} must be an integer >= {least}, "
                    f"got {getattr(merge_data, key)!r}"
                )

    @functools.cached_property
    def data(self) -> ImageData:
        """The dataset (``dataset.load()``), loaded or generated on first use."""
        return self.dataset.load()

    def setting_name(self, setting: str) -> str:
        """The benchmark name of ``setting``'s result rows: ``<name>_<setting>``."""
        return f"{self.name}_{setting}"

    @property
    def train_size(self) -> int:
        return len(self.data.train_y)

    def train_batches(
        self, samples: int, batch_size: int, seed: int, *, shuffle: bool = False
    ) -> Callable[[], Iterator[Batch]]:
        """A source of ``(x, y)`` batches of ``samples`` training images drawn with ``seed``
        (all if ``samples >= train_size``): in index order on every call, or with ``shuffle``
        reshuffled on every call from one generator seeded with ``seed``."""
        indices = sample_indices(self.train_size, samples, seed)
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return lambda: batches(self.data, "train", indices, batch_size, generator=generator)

    def merge_batches(self) -> Callable[[], Iterator[Batch]]:
        """The merge data (``benchmark.merge_data``), in the same order on every call."""
        md = self.merge_data
        return self.train_batches(md.samples, md.batch_size, md.seed)

    def accuracy(self, model: nn.Module, device: str | torch.device = "cpu") -> float:
        """Top-1 accuracy (%) of ``model`` on the whole test split (eval mode)."""
        return accuracy(test_logits(model, self.data, device), self.data.test_y)
