"""The validation split of the TALL masks protocol (Wang et al., ICML 2024).

Validation = a random 10% of the training set, at most 5000 samples, drawn with seed 0;
the experts are fine-tuned on the rest of train and scored on the official test split.
"""

from __future__ import annotations

import numpy as np

VAL_FRACTION, VAL_MAX, VAL_SEED = 0.1, 5000, 0


def train_val_indices(
    n_train: int, fraction: float = VAL_FRACTION, max_size: int = VAL_MAX, seed: int = VAL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train_rest, val) into a training set of ``n_train`` samples, both sorted."""
    n_val = min(int(n_train * fraction), max_size)
    perm = np.random.default_rng(seed).permutation(n_train)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
