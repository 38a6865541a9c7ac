"""The 20-task benchmark's data: task table, splits, decoding, the on-disk cache (offline)."""

from __future__ import annotations

import struct

import datasets
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from evaluation.benchmarks import benchmark_tasks
from evaluation.clip import datasets as clip_data
from evaluation.clip.tasks import EMNIST_DIGITS, ORDERS, TASKS
from evaluation.clip.zoo import normalise
from evaluation.splits import train_val_indices

PAPER_ORDER = ["Cars", "DTD", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "SUN397", "STL10",
               "OxfordIIITPet", "Flowers102", "CIFAR100", "PCAM", "FER2013", "CIFAR10", "Food101",
               "FashionMNIST", "RenderedSST2", "EMNIST", "KMNIST"]  # fmt: skip
CLASSES = {"Cars": 196, "DTD": 47, "EuroSAT": 10, "GTSRB": 43, "MNIST": 10, "RESISC45": 45,
           "SVHN": 10, "SUN397": 397, "STL10": 10, "OxfordIIITPet": 37, "Flowers102": 102,
           "CIFAR100": 100, "PCAM": 2, "FER2013": 7, "CIFAR10": 10, "Food101": 101,
           "FashionMNIST": 10, "RenderedSST2": 2, "EMNIST": 10, "KMNIST": 10}  # fmt: skip


def bench(**extra):
    return {"name": "tall8", "loader": "hub", "order": "tall", "num_tasks": 8, **extra}


def test_task_table_follows_the_paper():
    assert list(ORDERS["tall"]) == PAPER_ORDER
    assert list(ORDERS["ta"]) == ["SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB",
                                  "MNIST", "DTD"]  # fmt: skip
    for n in (8, 14, 20):
        assert [t.name for t in benchmark_tasks(bench(num_tasks=n))] == PAPER_ORDER[:n]
    for name, count in CLASSES.items():
        spec = TASKS[name]
        assert len(spec.classnames) == len(set(spec.classnames)) == count, name
        assert spec.templates and all(t.count("{}") == 1 for t in spec.templates), name
    assert TASKS["EMNIST"].source == EMNIST_DIGITS  # the paper's digits split
    assert TASKS["EMNIST"].hf_slug is None and TASKS["EMNISTLetters"].hf_slug == "emnist_letters"
    assert TASKS["Food101"].test_split == "validation" and TASKS["SVHN"].config == "cropped_digits"


def test_bad_benchmark_options_name_the_culprit():
    with pytest.raises(ValueError, match="unknown order 'paper'"):
        clip_data.task_order(bench(order="paper"))
    with pytest.raises(ValueError, match="sources names unknown task 'Carz'"):
        clip_data.task_order(bench(sources={"Carz": "/data/cars"}))
    with pytest.raises(ValueError, match="tasks names unknown task 'Imagenet'"):
        clip_data.task_order(bench(tasks=["Cars", "Imagenet"]))
    custom = clip_data.task_order(bench(tasks=["MNIST", "EMNISTLetters"]))
    assert [t.name for t in custom] == ["MNIST", "EMNISTLetters"]


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
    cfg = bench(sources={"MNIST": str(data)})
    task = next(t for t in clip_data.task_order(bench(order="ta")) if t.name == "MNIST")
    val_x, val_y = clip_data.load_split(cfg, task, "val", tmp_path / "cache", 16)
    test_x, test_y = clip_data.load_split(cfg, task, "test", tmp_path / "cache", 16)
    train_x, _ = clip_data.load_split(cfg, task, "train", tmp_path / "cache", 16)
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
    again_x, again_y = clip_data.load_split(cfg, task, "val", tmp_path / "cache", 16)
    assert torch.equal(again_x, val_x) and torch.equal(again_y, val_y)
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another entry
        clip_data.load_split(cfg, task, "val", tmp_path / "cache", 20)


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    cfg = bench(sources={"MNIST": str(make_saved(tmp_path / "mnist"))})
    task = clip_data.task_order(bench(tasks=["MNIST"]))[0]
    x = clip_data.load_split(cfg, task, "test", tmp_path / "cache", 16)[0].clone()  # unmap
    path = clip_data.cache_path(cfg, TASKS["MNIST"], "test", 16, tmp_path / "cache")
    with open(path / "images.npy", "r+b") as f:
        f.truncate(200)
    with pytest.warns(UserWarning, match="rebuilding damaged data cache"):
        y, _ = clip_data.load_split(cfg, task, "test", tmp_path / "cache", 16)
    assert torch.equal(x, y)


def test_dataset_problems_are_named(tmp_path):
    task = clip_data.task_order(bench(tasks=["MNIST"]))[0]

    def load(path):
        cfg = bench(sources={"MNIST": str(path)})
        return clip_data.load_split(cfg, task, "test", tmp_path / "cache", 16)

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
    task = clip_data.task_order(bench(tasks=["DTD"]))[0]
    cfg = bench(sources={"DTD": "nobody/no-such-dataset"})
    with pytest.raises(RuntimeError, match="task DTD.*benchmark.sources.DTD=<path>"):
        clip_data.load_split(cfg, task, "val", tmp_path / "cache", 16)


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
    task = clip_data.task_order(bench(tasks=["EMNIST"]))[0]
    x, y = clip_data.load_split(bench(), task, "val", tmp_path / "cache", 16)
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64
    x, _ = clip_data.load_split(bench(), task, "test", tmp_path / "cache", 16)
    assert len(x) == 10 and torch.equal(x[:, 0], x[:, 1])  # grayscale -> RGB
