"""The sandbox task generators: class names, templates, deterministic balanced draws."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.sandbox.tasks import GENERATORS, get_generator


def test_canonical_task_list():
    names = [t.name for t in GENERATORS]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert names[:8] == [
        "digits", "shapes", "colours", "textures", "letters", "counting", "orientation", "arrows"
    ]  # fmt: skip


@pytest.mark.parametrize("task", GENERATORS, ids=lambda t: t.name)
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
    images, labels = get_generator("letters").sample(9, seed=0, classes=[3, 7, 20])
    assert images.shape[0] == 9 and sorted(np.bincount(labels)[[3, 7, 20]]) == [3, 3, 3]


def test_get_generator_names_valid_ones():
    assert get_generator("digits") is GENERATORS[0]
    with pytest.raises(KeyError, match="'digitz'.*digits, shapes"):
        get_generator("digitz")
