"""The paper's val split: 10% of train, at most 5000, seed 0, as random_split draws it."""

import numpy as np
import torch

from evaluation.splits import train_val_indices


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
