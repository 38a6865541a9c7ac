"""The vision benchmark (HubVisionBenchmark) and its data: task table, configs, splits,
decoding, the on-disk cache (offline)."""

from __future__ import annotations

import os
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
from evaluation.clip.config import vision_benchmark_name
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
    """A benchmark named as the config names it."""
    options = {"order": "tall", "num_tasks": 8, "task_names": None, "val_from": "train", **extra}
    name = vision_benchmark_name(*(options[k] for k in ("order", "num_tasks", "task_names",
                                                        "val_from")))  # fmt: skip
    return HubVisionBenchmark(**{"name": name, **options})


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


DIGITS = datasets.ClassLabel(names=[str(i) for i in range(10)])


def make_saved(path, n_train=50, n_test=12, classes=10, label_feature=DIGITS, image_col="image",
               label_col="label"):  # fmt: skip
    rng = np.random.default_rng(1)

    def split(n):
        images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(20, 40)), 30, 3),
                                               dtype=np.uint8)) for _ in range(n)]  # fmt: skip
        features = datasets.Features({image_col: datasets.Image(), label_col: label_feature})
        labels = rng.integers(0, classes, n).tolist()
        return datasets.Dataset.from_dict({image_col: images, label_col: labels}, features=features)

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


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_cache_entry_is_rebuilt(tmp_path, damage):
    b = bench(sources={"MNIST": str(make_saved(tmp_path / "mnist"))}, decode_workers=0)
    mnist = task(b, "MNIST")
    x = b.load_split(mnist, "test", tmp_path / "cache", 16)[0].clone()  # unmap
    path = clip_data.cache_path(b.task_source("MNIST"), "test", 16, tmp_path / "cache")
    with open(path / "images.npy", "r+b") as f:
        if damage == "truncate":
            f.truncate(200)
        else:  # same size, same header: only a digest notices
            f.seek(-300, 2)
            f.write(bytes(300))
    with pytest.warns(UserWarning, match=r"images.npy fails its checksum; rebuilding"):
        y, _ = b.load_split(mnist, "test", tmp_path / "cache", 16)
    assert torch.equal(x, y)


def test_cache_files_follow_the_umask_and_killed_writes_are_cleaned(tmp_path):
    b = bench(sources={"MNIST": str(make_saved(tmp_path / "mnist"))}, decode_workers=0)
    path = clip_data.cache_path(b.task_source("MNIST"), "test", 16, tmp_path / "cache")
    path.mkdir(parents=True)
    stale = path / ".images.npy.999999999.abc.tmp"  # a writer killed mid-write (no such pid)
    stale.write_bytes(b"partial")
    b.load_split(task(b, "MNIST"), "test", tmp_path / "cache", 16)
    assert not stale.exists()
    for f in ("images.npy", "labels.npy", "images.npy.record.json"):
        assert (path / f).stat().st_mode & 0o777 == 0o666 & ~current_umask(), f
    assert (path.parent / "manifest.json").stat().st_mode & 0o044 == 0o044  # group-readable


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.filterwarnings("ignore:.*has no class names")
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
    with pytest.raises(ValueError, match=r"task MNIST.*do not map one-to-one.*'a', 'b'"):
        letters = datasets.ClassLabel(names=list("abcdefghij"))
        load(make_saved(tmp_path / "c", label_feature=letters))
    with pytest.raises(ValueError, match="label 1[0-9] in split 'test' is outside 0..9"):
        load(make_saved(tmp_path / "d", classes=20, label_feature=datasets.Value("int64")))
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


def compose_benchmark(*overrides):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=["benchmark=tall8", *overrides])
    return cfg.benchmark.name, instantiate(cfg.benchmark)


def test_name_says_what_the_benchmark_holds():
    name, benchmark = compose_benchmark("benchmark.num_tasks=3")
    assert name == benchmark.name == "tall3" and len(benchmark.tasks()) == 3
    name, _ = compose_benchmark("benchmark.task_names=[MNIST,SVHN]", "benchmark.num_tasks=null")
    assert name == "MNIST+SVHN"
    five, reordered = "[SUN397,Cars,RESISC45,EuroSAT,SVHN]", "[Cars,SUN397,RESISC45,EuroSAT,SVHN]"
    name, _ = compose_benchmark(f"benchmark.task_names={five}", "benchmark.num_tasks=null")
    other, _ = compose_benchmark(f"benchmark.task_names={reordered}", "benchmark.num_tasks=null")
    assert name.startswith("custom5-") and other.startswith("custom5-") and name != other
    assert compose_benchmark("benchmark.val_from=test")[0] == "tall8-val_from_test"
    assert compose_benchmark("benchmark.num_tasks=null")[0] == "tall20"
    with pytest.raises(ValueError, match=r"benchmark.name='tall8' does not say.*\(3 tasks"):
        HubVisionBenchmark(name="tall8", num_tasks=3)
    with pytest.raises(ValueError, match="benchmark.name='tall8'.*derives 'MNIST\\+SVHN'"):
        HubVisionBenchmark(name="tall8", task_names=["MNIST", "SVHN"])
    assert HubVisionBenchmark(name="my_digits", task_names=["MNIST", "SVHN"]).name == "my_digits"
    with pytest.raises(ValueError, match="benchmark.num_tasks=8 but benchmark.task_names lists 2"):
        bench(task_names=["MNIST", "SVHN"])


KAGGLE_FER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def fer_benchmark(tmp_path, names, **extra):
    data = make_saved(tmp_path / "fer", classes=7, label_feature=datasets.ClassLabel(names=names),
                      image_col="jpg", label_col="cls")  # fmt: skip
    b = bench(num_tasks=14, sources={"FER2013": str(data)}, decode_workers=0, **extra)
    return b, task(b, "FER2013"), datasets.load_from_disk(str(data))


def test_fer2013_in_kaggle_order_is_remapped_to_the_tasks_classes(tmp_path):
    b, fer, saved = fer_benchmark(tmp_path, KAGGLE_FER)
    ours = list(DATASETS["FER2013"].classnames)
    assert ours == ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
    with pytest.warns(UserWarning, match=r"task FER2013.*remapped.*'sad' 4 -> 5"):
        _, labels = b.load_split(fer, "test", tmp_path / "cache", 16)
    kaggle = saved["test"]["cls"]
    assert [ours[y] for y in labels.tolist()] == [
        {"disgust": "disgusted", "fear": "fearful", "surprise": "surprised"}.get(n, n)
        for n in (KAGGLE_FER[y] for y in kaggle)
    ]
    assert 4 in kaggle  # 'sad' occurs: scored as class 5, not 'neutral'


def test_unmatched_class_names_fail_naming_the_task_and_names(tmp_path):
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "bored"]
    b, fer, saved = fer_benchmark(tmp_path, names)
    with pytest.raises(ValueError, match=r"task FER2013.*'bored'.*'neutral'.*trust_label_order"):
        b.load_split(fer, "test", tmp_path / "cache", 16)
    b = bench(num_tasks=14, sources=b.sources, decode_workers=0, trust_label_order=["FER2013"])
    _, labels = b.load_split(task(b, "FER2013"), "test", tmp_path / "cache", 16)
    assert labels.tolist() == saved["test"]["cls"]  # taken as they are, as asked
    with pytest.raises(ValueError, match="benchmark.trust_label_order names unknown task 'FER'"):
        bench(trust_label_order=["FER"])


def test_label_order_of_the_tasks_own_hub_dataset_and_of_unnamed_labels(tmp_path):
    spec = DATASETS["FER2013"]
    hub = clip_data.TaskSource(spec, spec.source)  # the documented hub dataset
    with pytest.warns(UserWarning, match="cannot match .* task FER2013's .*classnames.json"):
        assert clip_data._label_order(["a", "b", "c", "d", "e", "f", "g"], hub, "w") is None
    assert clip_data._label_order(list(spec.classnames), hub, "w") is None  # same names
    unnamed = make_saved(tmp_path / "mnist", label_feature=datasets.Value("int64"))
    copy = bench(sources={"MNIST": str(unnamed)}, decode_workers=0)
    with pytest.warns(UserWarning, match="task MNIST.*has no class names.*trust_label_order"):
        copy.load_split(task(copy, "MNIST"), "test", tmp_path / "cache", 16)


def test_val_from_test_holds_val_out_of_the_test_split(tmp_path):
    data = make_saved(tmp_path / "mnist", n_train=30, n_test=40)
    b = bench(sources={"MNIST": str(data)}, decode_workers=0, val_from="test")
    assert b.name == "tall8-val_from_test"
    mnist, cache = task(b, "MNIST"), tmp_path / "cache"
    _, val_y = b.load_split(mnist, "val", cache, 16)
    _, test_y = b.load_split(mnist, "test", cache, 16)
    _, train_y = b.load_split(mnist, "train", cache, 16)
    saved = datasets.load_from_disk(str(data))
    rest, held = train_val_indices(40)
    assert val_y.tolist() == [saved["test"]["label"][i] for i in held]  # 10% of test
    assert test_y.tolist() == [saved["test"]["label"][i] for i in rest]  # the other 90%
    assert train_y.tolist() == saved["train"]["label"]  # all of train
    paper = bench(sources={"MNIST": str(data)}, decode_workers=0)
    assert len(paper.load_split(task(paper, "MNIST"), "val", cache, 16)[1]) == 3  # not reused
    with pytest.raises(ValueError, match="benchmark.val_from='val' is unknown; valid: train, test"):
        bench(val_from="val")


def test_two_tasks_never_read_one_data_source(tmp_path):
    data = str(make_saved(tmp_path / "digits"))
    with pytest.raises(ValueError, match="tasks MNIST and SVHN would both read data source"):
        bench(sources={"MNIST": data, "SVHN": data})
