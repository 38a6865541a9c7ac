"""The sandbox benchmark and its cached splits: sizes from the benchmark config, the TALL
masks val protocol, the checksum manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluation.benchmark import Task
from evaluation.sandbox import data
from evaluation.sandbox.benchmark import SandboxBenchmark
from evaluation.sandbox.tasks import GENERATORS, get_generator
from evaluation.splits import train_val_indices
from experiments.config import register_schemas

CONF = Path(__file__).resolve().parents[3] / "conf"
SMALL = {"n_train": 100, "n_test": 30}
GENERATED = {"real_images": "false"}  # generated tasks, whatever this machine has installed


def test_stable_seed_is_a_fixed_function():
    assert data.stable_seed("sandbox", "digits", "train") == data.stable_seed(
        "sandbox", "digits", "train"
    )
    assert data.stable_seed("a", "b") != data.stable_seed("a", "c")
    digest = hashlib.sha256(b"sandbox/digits/train").digest()
    assert data.stable_seed("sandbox", "digits", "train") == (
        int.from_bytes(digest[:8], "little") >> 1
    )


@pytest.mark.parametrize("size", [8, 14, 20])
def test_configs_compose_from_one_base(size, tmp_path):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"benchmark=sandbox{size}", f"cache_dir={tmp_path}"])
    benchmark = instantiate(cfg.benchmark)
    assert isinstance(benchmark, SandboxBenchmark) and benchmark.name == f"sandbox{size}"
    assert (benchmark.n_train, benchmark.n_test) == (3000, 1000)  # the experts' own draw
    # real_images=auto looks in the run's cache, which has no real dataset: generated tasks
    assert (benchmark.real_images, benchmark.cache_dir) == ("auto", str(tmp_path))
    assert [t.name for t in benchmark.tasks()] == [g.name for g in GENERATORS[:size]]
    assert benchmark.tasks()[0] == Task("digits", GENERATORS[0].classnames, GENERATORS[0].templates)


def test_name_says_how_many_tasks(tmp_path):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=["benchmark.num_tasks=3", f"cache_dir={tmp_path}"])
    assert cfg.benchmark.name == instantiate(cfg.benchmark).name == "sandbox3"
    with pytest.raises(ValueError, match=r"benchmark.name='sandbox8' does not say.*'sandbox3'"):
        SandboxBenchmark(name="sandbox8", num_tasks=3, n_train=100, n_test=30, **GENERATED)
    mine = SandboxBenchmark(name="mine", num_tasks=3, n_train=100, n_test=30, **GENERATED)
    assert mine.name == "mine"


def test_bad_benchmark_values_name_the_key():
    with pytest.raises(ValueError, match="benchmark.num_tasks=21"):
        SandboxBenchmark(name="s", num_tasks=21, n_train=100, n_test=30, **GENERATED)
    with pytest.raises(ValueError, match="benchmark.n_test=5 must be >= 10"):
        SandboxBenchmark(name="s", num_tasks=2, n_train=100, n_test=5)
    with pytest.raises(ValueError, match="benchmark.n_train: .*Integer"):
        SandboxBenchmark(name="s", num_tasks=2, n_train=1.5, n_test=30)
    with pytest.raises(ValueError, match="benchmark.name: .*missing"):
        SandboxBenchmark(num_tasks=2, n_train=100, n_test=30)
    with pytest.raises(ValueError, match="benchmark.real_images='yes' must be one of auto, tr"):
        SandboxBenchmark(name="s", num_tasks=2, n_train=100, n_test=30, real_images="yes")


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_splits_follow_the_protocol(tmp_path):
    benchmark = SandboxBenchmark(name="s", num_tasks=2, **SMALL, **GENERATED)
    shapes = benchmark.tasks()[1]
    train, y_train = benchmark.load_split(shapes, "train", tmp_path)
    val, y_val = benchmark.load_split(shapes, "val", tmp_path)
    test, y_test = benchmark.load_split(shapes, "test", tmp_path)
    assert (len(train), len(val), len(test)) == (90, 10, 30)
    assert train.dtype == torch.uint8 and train.shape[1:] == (3, 32, 32)
    assert y_train.dtype == torch.int64
    assert not _rows(train) & _rows(val) and not _rows(test) & (_rows(train) | _rows(val))
    full, _ = get_generator("shapes").sample(100, data.stable_seed("sandbox", "shapes", "train"))
    rest, held = train_val_indices(100)
    np.testing.assert_array_equal(val.numpy(), full[held])
    np.testing.assert_array_equal(train.numpy(), full[rest])
    counts = np.bincount(y_test.numpy())
    assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="32x32 images; the model expects 224x224"):
        benchmark.load_split(shapes, "val", tmp_path, image_size=224)


def test_bad_names_list_the_valid_ones(tmp_path):
    digits = get_generator("digits")
    with pytest.raises(ValueError, match="'dev'.*train, val, test"):
        data.load_split(digits, "dev", tmp_path, **SMALL)
    benchmark = SandboxBenchmark(name="s", num_tasks=2, **SMALL, **GENERATED)
    with pytest.raises(KeyError, match="'mnist'.*digits"):
        benchmark.load_split(Task("mnist", ("0",), ("{}",)), "train", tmp_path)
    with pytest.raises(ValueError, match="n_test"):
        data.load_split(digits, "test", tmp_path, n_train=100, n_test=0)


def test_cache_is_reused_and_corruption_regenerated(tmp_path, monkeypatch):
    counting = get_generator("counting")
    first = data.load_split(counting, "test", tmp_path, **SMALL)
    (path,) = (tmp_path / "sandbox_data").glob("*/counting-test-30.safetensors")
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert set(manifest["files"]) == {path.name}

    def no_draws(*args, **kwargs):
        raise AssertionError("regenerated a valid cache file")

    with monkeypatch.context() as m:
        m.setattr(data, "draw", no_draws)
        cached = data.load_split(counting, "test", tmp_path, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(first, cached, strict=True))

    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # flip image bytes
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"{path.name} fails its checksum"):
        again = data.load_split(counting, "test", tmp_path, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))

    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.warns(UserWarning, match=f"{path.name} fails its checksum"):
        data.load_split(counting, "test", tmp_path, **SMALL)
    data.load_split(counting, "test", tmp_path, **SMALL)  # regenerated file is fine again
