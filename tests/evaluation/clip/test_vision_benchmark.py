"""The vision benchmark (HubVisionBenchmark) and its data: task table, configs, splits,
decoding, the on-disk cache (offline)."""

from __future__ import annotations

import struct
from pathlib import Path

import datasets
import numpy as np
import open_clip
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from evaluation.clip import datasets as clip_data
from evaluation.clip.benchmark import HubVisionBenchmark
from evaluation.clip.model import normalise
from evaluation.clip.tasks import DATASETS, EMNIST_DIGITS, ORDERS
from evaluation.splits import train_val_indices
from experiments.config import register_schemas

CONF = Path(__file__).resolve().parents[3] / "conf"

PAPER_ORDER = ["Cars", "DTD", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "SUN397", "STL10",
               "OxfordIIITPet", "Flowers102", "CIFAR100", "PCAM", "FER2013", "CIFAR10", "Food101",
               "FashionMNIST", "RenderedSST2", "EMNIST", "KMNIST"]  # fmt: skip
CLASSES = {"Cars": 196, "DTD": 47, "EuroSAT": 10, "GTSRB": 43, "MNIST": 10, "RESISC45": 45,
           "SVHN": 10, "SUN397": 397, "STL10": 10, "OxfordIIITPet": 37, "Flowers102": 102,
           "CIFAR100": 100, "PCAM": 2, "FER2013": 7, "CIFAR10": 10, "Food101": 101,
           "FashionMNIST": 10, "RenderedSST2": 2, "EMNIST": 10, "KMNIST": 10}  # fmt: skip


def bench(**extra):
    return HubVisionBenchmark(**{"name": "tall8", "num_tasks": 8, **extra})


def task(benchmark, name):
    return next(t for t in benchmark.tasks() if t.name == name)


def test_task_table_follows_the_paper():
    assert list(ORDERS["tall"]) == PAPER_ORDER
    assert list(ORDERS["ta"]) == ["SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB",
                                  "MNIST", "DTD"]  # fmt: skip
    for n in (8, 14, 20):
        assert [t.name for t in bench(num_tasks=n).tasks()] == PAPER_ORDER[:n]
    for name, count in CLASSES.items():
        spec = DATASETS[name]
        assert len(spec.classnames) == len(set(spec.classnames)) == count, name
        assert spec.templates and all(t.count("{}") == 1 for t in spec.templates), name
    assert DATASETS["EMNIST"].source == EMNIST_DIGITS  # the paper's digits split
    assert DATASETS["EMNIST"].hf_slug is None
    assert DATASETS["EMNISTLetters"].hf_slug == "emnist_letters"
    assert DATASETS["Food101"].test_split == "validation"
    assert DATASETS["SVHN"].config == "cropped_digits"
    assert DATASETS["Cars"].classnames[0] == "AM General Hummer SUV 2000"  # from the data file
    assert DATASETS["SUN397"].templates == ("a photo of a {}.", "a photo of the {}.")


@pytest.mark.parametrize("name", ["tall8", "tall14", "tall20", "ta8"])
def test_configs_compose_from_one_base_and_build_the_benchmark(name):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"benchmark={name}"])
    benchmark = instantiate(cfg.benchmark)
    assert isinstance(benchmark, HubVisionBenchmark) and benchmark.name == name
    order = ORDERS["ta" if name == "ta8" else "tall"]
    assert [t.name for t in benchmark.tasks()] == list(order[: int(name.lstrip("tal"))])


def test_bad_benchmark_options_name_the_culprit():
    with pytest.raises(ValueError, match="benchmark.order='paper' is unknown"):
        bench(order="paper")
    with pytest.raises(ValueError, match="benchmark.sources names unknown task 'Carz'"):
        bench(sources={"Carz": "/data/cars"})
    with pytest.raises(ValueError, match="benchmark.task_names names unknown task 'Imagenet'"):
        bench(task_names=["Cars", "Imagenet"], num_tasks=2)
    with pytest.raises(ValueError, match="benchmark.num_tasks=21"):
        bench(num_tasks=21)
    with pytest.raises(ValueError, match="benchmark.decode_workers: .*Integer"):
        bench(decode_workers="many")
    custom = bench(task_names=["MNIST", "EMNISTLetters"], num_tasks=None)
    assert [t.name for t in custom.tasks()] == ["MNIST", "EMNISTLetters"]


def test_decoding_matches_open_clip_eval_transform():
    size = 24
    transform = open_clip.image_transform(size, is_train=False)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8))
    images = [rgb, rgb.convert("L").resize((19, 50)), rgb.convert("P"), rgb.convert("RGBA")]
    for image in images:
        x = torch.from_numpy(clip_data.resize_center_crop(image, size))[None]
        ours = normalise(x, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)[0]
        torch.testing.assert_close(ours, transform(image), rtol=0, atol=1e-5)


def make_saved(path, n_train=50, n_test=12, classes=10, label_feature=None, image_col="image"):
    rng = np.random.default_rng(1)

    def split(n):
        images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(20, 40)), 30, 3),
                                               dtype=np.uint8)) for _ in range(n)]  # fmt: skip
        label = label_feature or datasets.Value("int64")
        features = datasets.Features({image_col: datasets.Image(), "label": label})
        labels = rng.integers(0, classes, n).tolist()
        return datasets.Dataset.from_dict({image_col: images, "label": labels}, features=features)

    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(path))
    return path


def test_splits_are_cached_once_and_reused(tmp_path, monkeypatch):
    data = make_saved(tmp_path / "mnist")
    b = bench(order="ta", sources={"MNIST": str(data)}, decode_workers=0)
    mnist = task(b, "MNIST")
    val_x, val_y = b.load_split(mnist, "val", tmp_path / "cache", 16)
    test_x, test_y = b.load_split(mnist, "test", tmp_path / "cache", 16)
    train_x, _ = b.load_split(mnist, "train", tmp_path / "cache", 16)
    rest, val = train_val_indices(50)
    assert val_x.shape == (len(val), 3, 16, 16) and val_x.dtype == torch.uint8
    assert len(train_x) == len(rest) and test_x.shape == (12, 3, 16, 16)
    saved = datasets.load_from_disk(str(data))
    assert val_y.tolist() == [saved["train"][int(i)]["label"] for i in val]
    assert test_y.tolist() == saved["test"]["label"]
    first = np.asarray(clip_data.resize_center_crop(saved["train"][int(val[0])]["image"], 16))
    assert np.array_equal(val_x[0].numpy(), first)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached split was decoded again")

    monkeypatch.setattr(clip_data, "open_rows", no_decoding)
    again_x, again_y = b.load_split(mnist, "val", tmp_path / "cache", 16)
    assert torch.equal(again_x, val_x) and torch.equal(again_y, val_y)
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another entry
        b.load_split(mnist, "val", tmp_path / "cache", 20)


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    b = bench(sources={"MNIST": str(make_saved(tmp_path / "mnist"))}, decode_workers=0)
    mnist = task(b, "MNIST")
    x = b.load_split(mnist, "test", tmp_path / "cache", 16)[0].clone()  # unmap
    path = clip_data.cache_path(b.task_source("MNIST"), "test", 16, tmp_path / "cache")
    with open(path / "images.npy", "r+b") as f:
        f.truncate(200)
    with pytest.warns(UserWarning, match="rebuilding damaged data cache"):
        y, _ = b.load_split(mnist, "test", tmp_path / "cache", 16)
    assert torch.equal(x, y)


def test_dataset_problems_are_named(tmp_path):
    def load(path):
        b = bench(sources={"MNIST": str(path)}, decode_workers=0)
        return b.load_split(task(b, "MNIST"), "test", tmp_path / "cache", 16)

    with pytest.raises(
        ValueError, match=r"no image column 'image'; its columns: \['img', 'label'\]"
    ):
        load(make_saved(tmp_path / "a", image_col="img"))
    with pytest.raises(ValueError, match="has 5 classes, task MNIST has 10"):
        five = datasets.ClassLabel(names=list("abcde"))
        load(make_saved(tmp_path / "b", classes=5, label_feature=five))
    shuffled = datasets.ClassLabel(names=list("1023456789"))
    with pytest.raises(ValueError, match="label order differs"):
        load(make_saved(tmp_path / "c", label_feature=shuffled))
    with pytest.raises(ValueError, match="label 1[0-9] in split 'test' is outside 0..9"):
        load(make_saved(tmp_path / "d", classes=20))
    with pytest.raises(RuntimeError, match="no split 'test'; the saved dataset has \\['train'\\]"):
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1]})}).save_to_disk(
            str(tmp_path / "e")
        )
        load(tmp_path / "e")


def test_hub_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    b = bench(sources={"DTD": "nobody/no-such-dataset"})
    with pytest.raises(RuntimeError, match="task DTD.*benchmark.sources.DTD=<path>"):
        b.load_split(task(b, "DTD"), "val", tmp_path / "cache", 16)


def _idx(path, array: np.ndarray) -> None:
    magic = 0x0800 + array.ndim  # unsigned bytes, ndim dimensions (the MNIST idx format)
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


def test_emnist_digits_read_through_torchvision(tmp_path):
    raw = tmp_path / "cache" / "torchvision" / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for part, n in (("train", 40), ("test", 10)):
        _idx(raw / f"emnist-digits-{part}-images-idx3-ubyte",
             rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))  # fmt: skip
        _idx(
            raw / f"emnist-digits-{part}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8)
        )
    b = bench(num_tasks=20, decode_workers=0)
    x, y = b.load_split(task(b, "EMNIST"), "val", tmp_path / "cache", 16)
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64
    x, _ = b.load_split(task(b, "EMNIST"), "test", tmp_path / "cache", 16)
    assert len(x) == 10 and torch.equal(x[:, 0], x[:, 1])  # grayscale -> RGB
