"""The validation split of the TALL masks protocol (Wang et al., ICML 2024).

Validation = a random 10% of the training set, at most 5000 samples, seed 0; the experts
were fine-tuned on the rest of train and are scored on the official test split. The
draw is the authors' ``torch.utils.data.random_split(train, [n - n_val, n_val],
generator=torch.Generator().manual_seed(0))``: one ``torch.randperm(n)``, whose first
``n - n_val`` entries are train and last ``n_val`` are val (their code checks that the
first MNIST train index is 36044), so the released experts never saw our val split.

Experts fine-tuned on a dataset's whole train split (the hf_transformers CLIP experts) did
see it; for them the same draw holds val out of the test split instead (the CLIP
benchmark's ``val_from=test``: val = 10% of test, test accuracy on the other 90%).
"""

from __future__ import annotations

import numpy as np
import torch

VAL_FRACTION, VAL_MAX, VAL_SEED = 0.1, 5000, 0


def train_val_indices(
    n_train: int, fraction: float = VAL_FRACTION, max_size: int = VAL_MAX, seed: int = VAL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) into a split of ``n_train`` samples, both sorted: held_out =
    ``min(int(n_train * fraction), max_size)`` of them drawn by one seeded permutation."""
    n_val = min(int(n_train * fraction), max_size)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[: n_train - n_val]), np.sort(perm[n_train - n_val :])
