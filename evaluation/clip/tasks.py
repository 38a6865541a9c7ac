"""The 20 vision tasks of the TALL masks benchmark (Wang et al., ICML 2024), as data.

Per task (:class:`DatasetSpec`): where its data lives (a Hugging Face dataset id, its
config, the splits used as train and test, the image and label columns), its class names
in the label order of that dataset and its prompt templates (``{}`` = class name), both
read from the package's data files (``data/classnames.json``, ``data/templates.json``),
the slug of its re-trained experts ``tanganke/clip-vit-*_<slug>`` and the paper's
fine-tuning epochs.

Sources. Task order, EMNIST digits split and fine-tuning epochs: the TALL masks code
(github.com/nik-dim/tall_masks: ``src/utils/variables_and_paths.py``,
``src/datasets/emnist.py``, ``finetune.py``). Templates: CLIP's prompt engineering
(github.com/openai/CLIP ``data/prompts.md``) as used by Task Arithmetic (Ilharco et al.,
ICLR 2023, github.com/mlfoundations/task_vectors ``src/datasets/templates.py``) and TALL
masks (``src/datasets/templates.py``). Class names: as the TALL masks code builds them
(torchvision ``classes`` or the lists in its ``src/datasets/<task>.py``; each list's
``source`` in ``classnames.json``), ordered like the hub datasets' labels (checked against
fusion_bench's lists for the tanganke/* datasets, github.com/tanganke/fusion_bench
``fusion_bench/tasks/clip_classification``). Hub ids and splits:
``../shared/reference/README.md`` and fusion_bench's dataset configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

EMNIST_DIGITS = "torchvision:EMNIST/digits"  # torchvision.datasets.EMNIST(split="digits")


@dataclass(frozen=True)
class DatasetSpec:
    """One task's dataset and what the benchmark needs to know about it."""

    name: str  # the TALL masks name; its checkpoints live in "<name>Val/"
    source: str  # Hugging Face dataset id (or EMNIST_DIGITS)
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    config: str | None = None  # dataset config (subset) name
    train_split: str = "train"
    test_split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    hf_slug: str | None = None  # experts tanganke/clip-vit-*_<hf_slug>; None: not released
    epochs: int | None = None  # the paper's fine-tuning epochs (batch 128, about 2000 steps)


def _data(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath("data", name).read_text("utf-8"))


_CLASSNAMES, _TEMPLATES = _data("classnames.json"), _data("templates.json")


def _spec(name: str, source: str, **options: object) -> DatasetSpec:
    """The spec of task ``name``, its class names and templates from the data files."""
    classnames, templates = _CLASSNAMES[name]["names"], _TEMPLATES[name]
    return DatasetSpec(name, source, tuple(classnames), tuple(templates), **options)


_SPECS = (
    _spec("Cars", "tanganke/stanford_cars", hf_slug="stanford-cars", epochs=35),
    _spec("DTD", "tanganke/dtd", hf_slug="dtd", epochs=76),
    _spec("EuroSAT", "tanganke/eurosat", hf_slug="eurosat", epochs=12),
    _spec("GTSRB", "tanganke/gtsrb", hf_slug="gtsrb", epochs=11),
    _spec("MNIST", "ylecun/mnist", hf_slug="mnist", epochs=5),
    _spec("RESISC45", "tanganke/resisc45", hf_slug="resisc45", epochs=15),
    _spec("SVHN", "ufldl-stanford/svhn", config="cropped_digits", hf_slug="svhn", epochs=4),
    _spec("SUN397", "tanganke/sun397", hf_slug="sun397", epochs=14),
    _spec("STL10", "tanganke/stl10", hf_slug="stl10", epochs=60),
    _spec("OxfordIIITPet", "timm/oxford-iiit-pet", hf_slug="oxford-iiit-pet", epochs=82),
    _spec(
        "Flowers102", "dpdl-benchmark/oxford_flowers102", hf_slug="oxford_flowers102", epochs=147
    ),
    _spec("CIFAR100", "tanganke/cifar100", hf_slug="cifar100", epochs=6),
    _spec("PCAM", "1aurent/PatchCamelyon", hf_slug="pcam", epochs=1),
    _spec(
        "FER2013",
        "clip-benchmark/wds_fer2013",
        image_column="jpg",
        label_column="cls",
        hf_slug="fer2013",
        epochs=10,
    ),
    _spec("CIFAR10", "tanganke/cifar10", hf_slug="cifar10", epochs=6),
    # Food-101 has no test split on the hub: its official test set is "validation".
    _spec("Food101", "ethz/food101", test_split="validation", hf_slug="food101", epochs=4),
    _spec("FashionMNIST", "zalando-datasets/fashion_mnist", hf_slug="fashion_mnist", epochs=5),
    _spec("RenderedSST2", "nateraw/rendered-sst2", hf_slug="rendered-sst2", epochs=39),
    # The paper's EMNIST is the "digits" split (240k train / 40k test), read through
    # torchvision as the authors did; no hub copy of it is listed, and the tanganke experts
    # were trained on letters instead (task EMNISTLetters below).
    _spec("EMNIST", EMNIST_DIGITS, epochs=2),
    _spec("KMNIST", "tanganke/kmnist", hf_slug="kmnist", epochs=5),
    # Not in the paper: the letters variant some re-implementations use in its place.
    _spec("EMNISTLetters", "tanganke/emnist_letters", hf_slug="emnist_letters"),
)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}

# Benchmark orders: the first 8 / 14 / 20 tasks of "tall" are the paper's benchmarks
# (tall_masks src/utils/variables_and_paths.py); "ta" is Task Arithmetic's 8-task order
# (Ilharco et al., ICLR 2023).
ORDERS: dict[str, tuple[str, ...]] = {
    "tall": tuple(spec.name for spec in _SPECS[:20]),
    "ta": ("SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD"),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of task ``name``; unknown names list the valid ones."""
    if name not in DATASETS:
        raise KeyError(f"unknown CLIP benchmark task {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]
