"""The paper's val split: 10% of train, at most 5000, seed 0, as random_split draws it; and
reading one split of a local dataset (:func:`evaluation.splits.open_split`)."""

import datasets
import numpy as np
import pytest
import torch

from evaluation.splits import open_split, train_val_indices


def test_matches_the_authors_random_split_and_their_mnist_check():
    train, val = train_val_indices(60000)
    assert len(val) == 5000 and len(train) == 55000
    assert not set(train) & set(val)
    subsets = torch.utils.data.random_split(
        range(60000), [55000, 5000], generator=torch.Generator().manual_seed(0)
    )
    assert subsets[0].indices[0] == 36044  # the assertion in the authors' code
    assert np.array_equal(val, np.sort(subsets[1].indices))


def test_small_sets_take_ten_percent():
    train, val = train_val_indices(2000)
    assert len(val) == 200 and len(train) == 1800


def test_open_split_reads_saved_layouts_and_passes_the_subset_as_asked(tmp_path, monkeypatch):
    rows = datasets.Dataset.from_dict({"x": [1, 2]})
    datasets.DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "dict"))
    rows.save_to_disk(str(tmp_path / "per_split" / "test"))
    rows.save_to_disk(str(tmp_path / "single"))
    assert open_split(str(tmp_path / "dict"), None, "train", None, True)["x"] == [1, 2]
    assert open_split(str(tmp_path / "per_split"), None, "test", None, False)["x"] == [1, 2]
    with pytest.raises(ValueError, match="no split 'test'; the saved dataset has"):
        open_split(str(tmp_path / "dict"), None, "test", None, True)
    with pytest.raises(ValueError, match="single saved Dataset"):
        open_split(str(tmp_path / "single"), None, "train", None, False)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)))
    for local_subset in (True, False):
        open_split(str(tmp_path), "sub", "train", "rev", local_subset)
    open_split("org/name", "sub", "train", "rev", False)
    assert calls == [
        ((str(tmp_path), "sub"), {"split": "train"}),
        ((str(tmp_path), None), {"split": "train"}),
        (("org/name", "sub"), {"split": "train", "revision": "rev"}),
    ]
