"""The sandbox tasks and their cached splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from evaluation.sandbox import data
from evaluation.sandbox.tasks import TASKS, benchmark_tasks, get_task

SMALL = {"n_train": 100, "n_test": 30}


def test_canonical_task_list():
    names = [t.name for t in TASKS]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert [benchmark_tasks(k) for k in (8, 14, 20)] == [tuple(names[:k]) for k in (8, 14, 20)]
    with pytest.raises(ValueError, match="valid sizes"):
        benchmark_tasks(9)
    assert names[:8] == [
        "digits", "shapes", "colours", "textures", "letters", "counting", "orientation", "arrows"
    ]  # fmt: skip


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_task_samples(task):
    k = len(task.classnames)
    assert k >= 2 and len(set(task.classnames)) == k
    assert len(task.templates) >= 2 and all("{}" in t for t in task.templates)
    n = 3 * k + 1
    images, labels = task.sample(n, seed=1)
    assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(k))
    counts = np.bincount(labels, minlength=k)
    assert counts.max() - counts.min() <= 1
    assert images.reshape(n, -1).std(1).min() > 0  # no blank images
    again, again_labels = task.sample(n, seed=1)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = task.sample(n, seed=2)
    assert not np.array_equal(images, other)


def test_sample_restricted_to_classes():
    images, labels = get_task("letters").sample(9, seed=0, classes=[3, 7, 20])
    assert images.shape[0] == 9 and sorted(np.bincount(labels)[[3, 7, 20]]) == [3, 3, 3]


def test_get_task_names_valid_ones():
    assert get_task("digits") is TASKS[0]
    with pytest.raises(KeyError, match="'digitz'.*digits, shapes"):
        get_task("digitz")


def test_stable_seed_is_a_fixed_function():
    assert data.stable_seed("sandbox", "digits", "train") == data.stable_seed(
        "sandbox", "digits", "train"
    )
    assert data.stable_seed("a", "b") != data.stable_seed("a", "c")
    digest = hashlib.sha256(b"sandbox/digits/train").digest()
    assert data.stable_seed("sandbox", "digits", "train") == (
        int.from_bytes(digest[:8], "little") >> 1
    )


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_splits_follow_the_protocol(tmp_path):
    train, y_train = data.load_split("shapes", "train", tmp_path, **SMALL)
    val, y_val = data.load_split("shapes", "val", tmp_path, **SMALL)
    test, y_test = data.load_split("shapes", "test", tmp_path, **SMALL)
    assert (len(train), len(val), len(test)) == (90, 10, 30)
    assert train.dtype == torch.uint8 and train.shape[1:] == (3, 32, 32)
    assert y_train.dtype == torch.int64
    assert not _rows(train) & _rows(val) and not _rows(test) & (_rows(train) | _rows(val))
    full, _ = get_task("shapes").sample(100, data.stable_seed("sandbox", "shapes", "train"))
    rest, held = data.train_val_indices(100)
    np.testing.assert_array_equal(val.numpy(), full[held])
    np.testing.assert_array_equal(train.numpy(), full[rest])
    counts = np.bincount(y_test.numpy())
    assert counts.max() - counts.min() <= 1


def test_bad_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'dev'.*train, val, test"):
        data.load_split("digits", "dev", tmp_path)
    with pytest.raises(KeyError, match="'mnist'.*digits"):
        data.load_split("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="n_test"):
        data.load_split("digits", "test", tmp_path, n_train=100, n_test=0)


def test_cache_is_reused_and_corruption_regenerated(tmp_path, monkeypatch):
    first = data.load_split("counting", "test", tmp_path, **SMALL)
    (path,) = (tmp_path / "sandbox_data").glob("counting-test-*.safetensors")

    def fail(*args):
        raise AssertionError("regenerated a valid cache file")

    with monkeypatch.context() as m:
        m.setattr(data, "_generate", fail)
        cached = data.load_split("counting", "test", tmp_path, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(first, cached, strict=True))

    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # flip image bytes
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"{path.name}.*checksum"):
        again = data.load_split("counting", "test", tmp_path, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))

    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.warns(UserWarning, match=f"{path.name}.*unreadable"):
        data.load_split("counting", "test", tmp_path, **SMALL)
    data.load_split("counting", "test", tmp_path, **SMALL)  # regenerated file is fine again
